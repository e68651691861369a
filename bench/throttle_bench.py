"""What the shared mail throttle costs a worker, and how close it gets to the configured rate.

One worker on SQLite sends prepared messages to a loopback aiosmtpd server (send_bench's
setup), in the same process, rounds alternating:
1. no limit: the baseline, U messages a second (one read of the `mail` row per batch);
2. REAUTH_MAIL_RATE_PER_SECOND = 2 U, a rate that never binds: the worker cannot keep up with
   consecutive slots, so it reserves one slot per message; reported as a ratio to U;
3. REAUTH_MAIL_RATE_PER_SECOND = U / 2, a rate that binds: slots reserved a batch at a time;
   reported as the share of the configured rate reached (1.00 = all of it);
4. as 3, with REAUTH_MAIL_RATE_PER_DOMAIN = U / 2 too (every message to one domain): both
   rows reserved in one transaction per batch;
5. a relay's sort of rate, 50 a second (--messages / 3 messages): the share reached.

Usage: python bench/throttle_bench.py [--messages 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from send_bench import CountingHandler, bench_config, free_port, seed, smtp_worker

from portal import create_app
from portal.db import db

RELAY_RATE = 50.0


def sent_per_second(config: dict[str, Any], count: int) -> float:
    app = create_app(config, plugins=None)
    seed(app, count)
    with app.app_context():
        worker = smtp_worker(app)
        started = time.perf_counter()
        sent = worker.run(once=True).sent
        elapsed = time.perf_counter() - started
        db.engine.dispose()
    assert sent == count, (sent, count)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    figures: dict[str, list[float]] = {
        "free": [],
        "loose": [],
        "binding": [],
        "domain": [],
        "relay": [],
    }
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.environ["REAUTH_INSTANCE_PATH"] = folder
            for round_number in range(args.rounds):
                url = f"sqlite:///{Path(folder) / f'throttle-{round_number}.sqlite3'}"
                config = bench_config(url, port)
                free = sent_per_second(config, args.messages)
                loose = {**config, "MAIL_RATE_PER_SECOND": 2 * free}
                binding = {**config, "MAIL_RATE_PER_SECOND": free / 2}
                domain = {**binding, "MAIL_RATE_PER_DOMAIN": free / 2}
                figures["free"].append(free)
                figures["loose"].append(sent_per_second(loose, args.messages) / free)
                figures["binding"].append(sent_per_second(binding, args.messages) / (free / 2))
                figures["domain"].append(sent_per_second(domain, args.messages) / (free / 2))
                relay = {**config, "MAIL_RATE_PER_SECOND": RELAY_RATE}
                figures["relay"].append(sent_per_second(relay, args.messages // 3) / RELAY_RATE)
    finally:
        controller.stop()
    median = {name: statistics.median(values) for name, values in figures.items()}
    shown = {name: ", ".join(f"{v:.2f}" for v in values) for name, values in figures.items()}
    print(f"no limit (baseline U)                 : {median['free']:8.0f} msg/s")
    print(f"rate 2U (never binds) / U             : {median['loose']:8.2f}   ({shown['loose']})")
    print(
        f"rate U/2: share of the rate reached   : {median['binding']:8.2f}   ({shown['binding']})"
    )
    print(f"rate and domain U/2: share reached    : {median['domain']:8.2f}   ({shown['domain']})")
    print(f"rate 50/s: share of the rate reached  : {median['relay']:8.2f}   ({shown['relay']})")
    print(f"({args.messages} messages, median of {args.rounds} rounds, one worker, SQLite)")


if __name__ == "__main__":
    main()
