"""One PyKMIP server for vmcrypt's tests, configured entirely from the command line.

The test kit starts several of these on 127.0.0.1 with one shared SQLite database, which makes
them behave like a replicating KMS cluster. The process leads its own process group (so the kit
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
    for name in ("port", "cert", "key", "ca", "db", "log", "policies", "owner", "lifetime"):
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
        port=int(a.port),
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
    with open(a.db + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server.start()
        fcntl.flock(lock, fcntl.LOCK_UN)
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
