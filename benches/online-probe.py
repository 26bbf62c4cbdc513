"""The latency probe of benches/online-rekey.sh: feeds qemu-io (on stdout) one 4 KiB request
every few milliseconds, alternately a read and a write, and every other pair at the online job's
boundary, which it asks the serving process for over the disk's control socket. Requests at
the boundary touch the window being rewritten, so they are the ones that wait for it: the
worst latency the bench reports is theirs. Between jobs (no boundary) every request goes to a
random offset. Runs until killed.

Usage: python3 online-probe.py CONTROL_SOCKET DISK_BYTES [PERIOD_MS]
"""
import json
import random
import socket
import sys
import time


def boundary(ctl):
    """The job's bytes done (its boundary), or None outside a job or if the server is gone."""
    try:
        ctl.sendall(b'{"op":"status"}\n')
        line = b""
        while not line.endswith(b"\n"):
            chunk = ctl.recv(65536)
            if not chunk:
                return None
            line += chunk
        job = json.loads(line).get("job")
        if job and job.get("state") == "running":
            return int(job["done"])
    except (OSError, ValueError):
        return None
    return None


def main():
    path, size = sys.argv[1], int(sys.argv[2])
    period = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.004
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.connect(path)
    blocks = size // 4096
    n = 0
    while True:
        at = None
        if n % 4 < 2:
            b = boundary(ctl)
            if b is not None and b + 4096 <= size:
                at = b
        if at is None:
            at = random.randrange(blocks) * 4096
        op = "read" if n % 2 == 0 else "write -P 90"
        sys.stdout.write(f"{op} {at} 4k\n")
        sys.stdout.flush()
        n += 1
        time.sleep(period)


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
