"""One PyKMIP server for vmcrypt's tests, configured entirely from the command line.

The test kit starts several of these on 127.0.0.1 with one shared SQLite database, which makes
them behave like a replicating KMS cluster. Each binds a port the kernel picks and writes it to
--port-file. The process leads its own process group (so the kit
can stop it with its helpers), creates the database schema under a file lock (servers start
concurrently on an empty database), and exits by itself when the test process that started it
is gone or after a maximum lifetime.
"""
import argparse
import fcntl
import os
import signal
import sys
import threading
import time
import warnings


def parent_gone(pid):
    try:
        os.kill(pid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def guard(done, owner, lifetime):
    started = time.monotonic()
    while not done.wait(0.5):
        if parent_gone(owner) or time.monotonic() - started > lifetime:
            os.kill(os.getpid(), signal.SIGINT)
            if not done.wait(5):
                os.killpg(0, signal.SIGKILL)
            return


def main():
    p = argparse.ArgumentParser()
    for name in ("port-file", "cert", "key", "ca", "db", "log", "policies", "owner", "lifetime"):
        p.add_argument("--" + name, required=True)
    a = p.parse_args()
    try:
        os.setsid()
    except OSError:
        pass
    warnings.simplefilter("ignore")  # PyKMIP 0.11 on current libraries is noisy
    from kmip.services.server.server import KmipServer

    os.makedirs(a.policies, exist_ok=True)
    server = KmipServer(
        hostname="127.0.0.1",
        port=1,  # replaced by 0 below: PyKMIP's checks refuse 0
        certificate_path=a.cert,
        key_path=a.key,
        ca_path=a.ca,
        auth_suite="TLS1.2",
        config_path=None,
        log_path=a.log,
        policy_path=a.policies,
        enable_tls_client_auth=True,
        logging_level="INFO",
        live_policies=False,
        database_path=a.db,
    )
    server.config.settings["port"] = 0
    with open(a.db + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server.start()
        fcntl.flock(lock, fcntl.LOCK_UN)
    # The kernel chose the port at bind: report it (atomically) to the kit, which would
    # otherwise race other test processes for a port it picked itself.
    port = server._socket.getsockname()[1]
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, a.port_file)
    done = threading.Event()
    threading.Thread(target=guard, args=(done, int(a.owner), float(a.lifetime)), daemon=True).start()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
