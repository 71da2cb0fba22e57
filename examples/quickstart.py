"""gyroscope quickstart: one hot loop and one contended lock, about two seconds.

    gyroscope run examples/quickstart.py
    gyroscope run --json session.json examples/quickstart.py
"""
import threading
import time

stats_lock = threading.Lock()
totals = {"writes": 0}


def checksum(n):
    """The hot loop: pure-Python arithmetic, all on the CPU."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def record(rounds):
    """Four threads take turns on one lock and hold it while they 'write': they mostly wait."""
    for _ in range(rounds):
        with stats_lock:
            time.sleep(0.002)
            totals["writes"] += 1


if __name__ == "__main__":
    writers = [threading.Thread(target=record, args=(150,), name=f"writer-{k}") for k in range(4)]
    for t in writers:
        t.start()
    print("checksum", checksum(6_000_000))
    for t in writers:
        t.join()
    print("writes", totals["writes"])
