"""``python -m sts_bridge_devstack.api --config CONFIG.json --port N``: serve the
reference TerrAPI server with uvicorn on 127.0.0.1 (one log line per request
on stderr; no access log, no tokens)."""

from __future__ import annotations

import argparse
import json
import logging

from .app import configure_logging, create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sts_bridge_devstack.api")
    parser.add_argument("--config", required=True, help="JSON config file (see create_app)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        config = json.load(fh)
    config.setdefault("public_url", f"http://{args.host}:{args.port}/core")
    configure_logging(logging.WARNING if args.quiet else logging.INFO)
    app = create_app(config)

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
