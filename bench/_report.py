"""Tables and targets from a run's JSON document (see run.py for its shape).

Units: MB = 10^6 bytes (RSS and throughput), GiB/MiB = 2^30/2^20 (file sizes).
Ratios are sts-bridge / other on medians: below 1.00 means sts-bridge took
less wall time, CPU or memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

STS_IDS = ("stsb-sdk", "stsb-cli", "stsb-cli-10m")
#: ``*_over``: into an object / a file that exists with other bytes of the same size (issue 19)
TRANSFERS = (
    "up",
    "up_over",
    "down",
    "down_over",
    "up_small",
    "down_small",
    "many",
    "few",
    "resync",
)
#: issue 19's goals beside the transfers: client CPU of the ``up_cpu`` upload against
#: boto3's, and the fixed cost of a warm tiny command against the pre-urllib3 CLI
CPU_VS_BOTO3 = ("up_cpu", 0.5)
FIXED_COST_BUDGET_MS = 40.0
#: ``sts-bridge run`` against ``s5cmd run`` with the same lines (issue 19)
BATCHES = ("batch_presign", "batch_up", "batch_down")
MARK_START = "<!-- bench:start -->"
MARK_END = "<!-- bench:end -->"


def human(n: int) -> str:
    if n >= 1 << 30 and n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 10**6 and n % 10**6 == 0:
        return f"{n // 10**6} MB"
    return f"{n:,} B"


def _med(r: dict[str, Any], f: str) -> float | None:
    v = r.get(f)
    return None if v is None else float(v["median"])


def _spread(r: dict[str, Any], f: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    v = r.get(f)
    if v is None:
        return "failed"
    m, lo, hi = (fmt.format(v[k] / scale) for k in ("median", "min", "max"))
    return m if lo == hi else f"{m} ({lo}-{hi})"


def _scenarios(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc.get("scenarios", [])}


# ------------------------------------------------------------------------ targets
def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    sc = _scenarios(doc)

    def add(
        name: str, measured: float | None, limit: str, met: bool | None, note: str = ""
    ) -> None:
        out.append({"target": name, "measured": measured, "limit": limit, "met": met, "note": note})

    for sid in TRANSFERS + BATCHES:
        s = sc.get(sid)
        if not s:
            continue
        res = s["results"]
        for cid in STS_IDS:
            mine = res.get(cid)
            if not mine or _med(mine, "wall") is None:
                if mine:
                    add(f"{s['label']}: {mine['label']} ran", None, "ok", False, "failed")
                continue
            w, c = _med(mine, "wall"), _med(mine, "cpu")
            s5 = res.get("s5cmd")
            if s5 and _med(s5, "wall"):
                r = w / _med(s5, "wall")  # type: ignore[operator]
                add(f"{s['label']}: {mine['label']} wall / s5cmd", r, "<= 1.00", r <= 1.0)
                r = c / _med(s5, "cpu")  # type: ignore[operator]
                add(f"{s['label']}: {mine['label']} client CPU / s5cmd", r, "<= 1.00", r <= 1.0)
            aws = res.get("aws") if sid == "resync" else None
            if aws and _med(aws, "wall"):
                r = w / _med(aws, "wall")  # type: ignore[operator]
                add(f"{s['label']}: {mine['label']} wall / aws s3 sync", r, "<= 1.00", r <= 1.0)
            for bid in ("boto3", "boto3-32t"):
                b = res.get(bid)
                if b and _med(b, "wall"):
                    r = _med(b, "wall") / w  # type: ignore[operator]
                    add(
                        f"{s['label']}: {mine['label']} speed-up vs {b['label']}",
                        r,
                        ">= 1.20",
                        r >= 1.2,
                    )
    out += cpu_vs_boto3_targets(sc.get(CPU_VS_BOTO3[0]), CPU_VS_BOTO3[1])
    out += fixed_cost_targets(sc.get("fixed"))
    for s in sc.values():
        if s["kind"] == "presign":
            continue
        for cid in STS_IDS:
            mine = s["results"].get(cid)
            if mine and mine.get("rss"):
                mb = mine["rss"]["max"] / 1e6
                add(
                    f"{s['label']}: {mine['label']} peak RSS (max of runs), MB",
                    mb,
                    "< 100",
                    mb < 100,
                )
    for big, mid in (("up", "up_small"), ("down", "down_small")):
        if big in sc and mid in sc:
            for cid in STS_IDS:
                a, b = sc[big]["results"].get(cid), sc[mid]["results"].get(cid)
                if a and b and a.get("rss") and b.get("rss"):
                    ra, rb = _med(a, "rss") / 1e6, _med(b, "rss") / 1e6  # type: ignore[operator]
                    d = ra - rb
                    add(
                        f"{a['label']}: RSS {sc[big]['label']} minus {sc[mid]['label']}, MB",
                        d,
                        "<= max(5 MB, 10%)",
                        d <= max(5.0, 0.1 * rb),
                        "flat RSS",
                    )
    p = sc.get("presign")
    if p:
        aws = p["results"].get("aws")
        for cid, what in (("stsb-cli", "defaults"), ("stsb-cli-10m", "--expires-in 10m")):
            mine = p["results"].get(cid)
            if mine and aws and _med(mine, "wall") and _med(aws, "wall"):
                r = _med(mine, "wall") / _med(aws, "wall")  # type: ignore[operator]
                add(
                    f"warm `sts-bridge presign` ({what}) wall / `aws s3 presign`",
                    r,
                    "<= 0.50",
                    r <= 0.5,
                )
    pm = doc.get("presign_many")
    if pm and pm["rates"].get("stsb") and pm["rates"].get("boto3"):
        import statistics

        r = statistics.median(pm["rates"]["stsb"]) / statistics.median(pm["rates"]["boto3"])
        add("presign_many URLs/s / boto3 SigV4 loop", r, ">= 15", r >= 15)
        add(
            "presign_many URLs byte-identical to botocore",
            None,
            "yes",
            bool(pm.get("identical")),
            f"{pm.get('detail', {}).get('compared', 0)} compared",
        )
    runs = reqs = 0
    offenders: dict[str, int] = {}
    for s in sc.values():
        for cid in STS_IDS:
            res = s["results"].get(cid) or {}
            for smp in res.get("samples", []):
                if "requests" in smp:
                    r = smp["requests"]
                    n = r["api"] + r.get("idp_client", r["idp"])
                    runs += 1
                    reqs += n
                    if n:
                        what = f"{s['label']}: {res['label']}"
                        offenders[what] = offenders.get(what, 0) + n
    if runs:
        add(
            "warm sts-bridge runs above (cached credentials): API + IdP requests, total",
            reqs,
            "0",
            reqs == 0,
            f"{runs} runs" + "".join(f"; {k}: {v}" for k, v in offenders.items()),
        )
    rq = doc.get("requests")
    if rq:
        for name, limit in (("warm", 0), ("cold", 3)):
            c = rq[name]
            n = c["api"] + c["idp_client"]
            add(
                f"{name} `sts-bridge upload`: API + IdP requests made by sts-bridge",
                n,
                f"<= {limit}" if limit else "0",
                n <= limit,
                f"API {c['api']}, IdP {c['idp_client']}; raw IdP count {c['idp']} "
                "incl. radosgw's discovery+JWKS",
            )
    return out


def cpu_vs_boto3_targets(s: dict[str, Any] | None, limit: float) -> list[dict[str, Any]]:
    """Issue 19: sts-bridge's client CPU on one upload at most ``limit`` x boto3's."""
    b = s["results"].get("boto3") if s else None
    if not s or not b or not _med(b, "cpu"):
        return []
    out = []
    for cid in STS_IDS:
        mine = s["results"].get(cid)
        if mine and _med(mine, "cpu") is not None:
            r = _med(mine, "cpu") / _med(b, "cpu")  # type: ignore[operator]
            out.append(
                {
                    "target": f"{s['label']}: {mine['label']} client CPU / {b['label']}",
                    "measured": r,
                    "limit": f"<= {limit:.2f}",
                    "met": r <= limit,
                    "note": "",
                }
            )
    return out


def fixed_cost_targets(s: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 19: a warm ``sts-bridge download`` of a 3-byte object within 40 ms of the
    CLI before the urllib3 transport (``stsb-base``), both measured in the same run
    beside ``s5cmd cp``: the medians' differences in ms, wall and CPU (CPU moves least
    on a busy machine). The note gives sts-bridge minus s5cmd cp in the same run."""
    if not s:
        return []
    res = s["results"]
    mine, base, s5 = res.get("stsb-cli"), res.get("stsb-base"), res.get("s5cmd")
    if not mine or _med(mine, "wall") is None:
        return []
    out = []
    for f, what in (("wall", "wall"), ("cpu", "CPU")):
        note = ""
        if s5 and _med(s5, f) is not None:
            d5 = (_med(mine, f) - _med(s5, f)) * 1000  # type: ignore[operator]
            note = f"sts-bridge minus s5cmd cp: {d5:+.1f} ms"
        if base and _med(base, f) is not None:
            d = (_med(mine, f) - _med(base, f)) * 1000  # type: ignore[operator]
            met: bool | None = d <= FIXED_COST_BUDGET_MS
        else:
            d, met = None, None
            note = "; ".join(x for x in (note, "the baseline did not run") if x)
        out.append(
            {
                "target": f"{s['label']}: `sts-bridge download` {what} minus "
                f"{base['label'] if base else 'the CLI before urllib3'}, ms",
                "measured": d,
                "limit": f"<= {FIXED_COST_BUDGET_MS:.0f}",
                "met": met,
                "note": note,
            }
        )
    return out


# ------------------------------------------------------------------------ markdown
def markdown(doc: dict[str, Any]) -> str:
    m, v, p = doc["machine"], doc["versions"], doc["params"]
    lines = [
        f"### Benchmark results, {doc['date']}",
        "",
        f"Machine: {m['nproc']} x {m['cpu']}, {m['ram']} RAM, {m['os']} (load average at start "
        f"{m['load_avg_at_start']}); client and radosgw share the cores. Python {v['python']}, "
        f"radosgw {v['radosgw'].split(' (')[0]} on memstore, boto3 {v['boto3']}, "
        f"{v['awscli'].split(' ')[0]}, s5cmd {v['s5cmd']}, sts-bridge {v.get('sts-bridge', '?')}"
        f" ({v.get('sts-bridge commit', '?')}).",
        f"Runs: {p['warmup']} warm-up + {p['reps']} counted rounds per scenario, contenders "
        f"interleaved; medians with (min-max); mode: {doc['mode']}; "
        f"took {doc.get('duration_s', '?')} s.",
        "",
    ]
    loads = [
        smp["load"]
        for s in doc.get("scenarios", [])
        for r in s["results"].values()
        for smp in r.get("samples", [])
        if smp.get("load")
    ]
    if loads or m.get("load_avg_at_end"):
        end = m.get("load_avg_at_end", "?")
        seen = f"{min(loads):.2f}-{max(loads):.2f}" if loads else "not recorded"
        lines += [
            f"1-minute load average before each run: {seen}; at the end: {end} "
            "(it includes the benchmark's own radosgw and client, which keep the 2 cores "
            "busy: the 1-minute average lags behind the previous round).",
            "",
        ]
        start = str(m.get("load_avg_at_start", "")).split()
        idle = float(start[0]) if start else 0.0
        if idle > 1.0:
            lines += [
                f"**Other work was running when this run started (load {idle:.2f} on "
                f"{m['nproc']} cores), so wall times are noisy; compare the CPU columns "
                "and the spreads.**",
                "",
            ]
    if doc.get("quick"):
        lines += [
            "**Quick run (small sizes, 1 round): checks the harness; the numbers are not "
            "representative.**",
            "",
        ]
    if doc["mode"] != "platform":
        lines += ["**No sts-bridge contenders in this run** (plain radosgw user).", ""]
    lines += [
        "| scenario | contender | wall s | throughput | client CPU s | CPU s / GiB | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in doc["scenarios"]:
        if s["kind"] in ("presign", "fixed"):
            continue
        gib = s["bytes"] / (1 << 30)
        for r in s["results"].values():
            w = _med(r, "wall")
            if w is None:
                lines.append(f"| {s['label']} | {r['label']} | failed | | | | |")
                continue
            thr = f"{s['bytes'] / w / 1e6:,.0f} MB/s"
            if s["kind"] == "upload_many":
                thr = f"{s['objects'] / w:,.0f} obj/s"
            elif s["kind"] == "resync":
                thr = f"{s['objects'] / w:,.0f} files checked/s"
            elif s["kind"] == "batch":
                thr = f"{s['objects'] / w:,.0f} commands/s"
            cpu = _med(r, "cpu") or 0.0
            per_gib = f"{cpu / gib:.2f}" if gib else "-"
            label = f"**{r['label']}**" if r.get("sts") else r["label"]
            lines.append(
                f"| {s['label']} | {label} | {_spread(r, 'wall')} | {thr} | "
                f"{_spread(r, 'cpu')} | {per_gib} | {_spread(r, 'rss', 1e6, '{:.0f}')} |"
            )
    sc = _scenarios(doc)
    if "presign" in sc or doc.get("presign_many"):
        lines += ["", "| presign | contender | result |", "|---|---|---:|"]
        if "presign" in sc:
            for r in sc["presign"]["results"].values():
                label = f"**{r['label']}**" if r.get("sts") else r["label"]
                lines.append(
                    f"| one URL, whole command (warm) | {label} | "
                    f"{_spread(r, 'wall', fmt='{:.3f}')} s |"
                )
        pm = doc.get("presign_many")
        if pm:
            import statistics

            names = {
                "stsb": "**sts-bridge Workspace.presign_many** (10 min URLs)",
                "stsb-1h": "sts-bridge Workspace.presign_many, 1 h URLs (more than the "
                "credentials have left: refresh attempt + clamp)",
                "boto3": "boto3 generate_presigned_url (SigV4) loop",
            }
            for k, rates in pm["rates"].items():
                if rates:
                    lines.append(
                        f"| {pm['n']:,} URLs | {names[k]} | {statistics.median(rates):,.0f} URLs/s "
                        f"({min(rates):,.0f}-{max(rates):,.0f}) |"
                    )
    if "fixed" in sc:
        fx = sc["fixed"]
        lines += [
            "",
            f"| {fx['label']}, whole command, into a new file | contender | wall ms | "
            "client CPU ms | peak RSS MB |",
            "|---|---|---:|---:|---:|",
        ]
        for r in fx["results"].values():
            label = f"**{r['label']}**" if r.get("sts") else r["label"]
            lines.append(
                f"| {r['runs'] - r['failed']} rounds | {label} | "
                f"{_spread(r, 'wall', 1e-3, '{:.0f}')} | {_spread(r, 'cpu', 1e-3, '{:.0f}')} | "
                f"{_spread(r, 'rss', 1e6, '{:.0f}')} |"
            )
    rq = doc.get("requests")
    if rq:
        lines += [
            "",
            "| `sts-bridge upload` | API requests | IdP requests by sts-bridge | IdP requests, "
            "all (radosgw fetches discovery + JWKS per STS exchange) |",
            "|---|---:|---:|---:|",
        ]
        for k in ("cold", "warm"):
            r = rq[k]
            lines.append(f"| {k} | {r['api']} | {r['idp_client']} | {r['idp']} |")
    prof = doc.get("profile")
    if prof:
        st = prof["steps"]

        def cpu(k: str) -> float:
            return float(st[k]["cpu"]["median"]) if st.get(k, {}).get("cpu") else float("nan")

        up, setup, imp, sha = cpu("upload"), cpu("setup"), cpu("import"), cpu("sha256")
        lines += [
            "",
            f"Where the SDK's client CPU goes, upload of {human(prof['bytes'])} "
            "(medians of separate runs, CPU seconds, by subtraction):",
            "",
            "| part | CPU s | share |",
            "|---|---:|---:|",
            f"| Python start + imports (sts_bridge, boto3) | {imp:.2f} | {imp / up:.0%} |",
            f"| workspace + cached credentials + boto3 S3 client | {setup - imp:.2f} | "
            f"{(setup - imp) / up:.0%} |",
            "| SHA-256 of every byte (hashlib alone, own process: reading + ~0.02 s start) | "
            f"{sha:.2f} | "
            f"{sha / up:.0%} |",
            f"| the rest: HTTP, signing, threads, part bookkeeping | {up - setup - sha:.2f} | "
            f"{(up - setup - sha) / up:.0%} |",
            f"| **whole upload** | {up:.2f} | 100% |",
        ]
    lines += [
        "",
        "Ratios sts-bridge / other (medians; below 1.00 = sts-bridge better):",
        "",
        "| scenario | sts-bridge | vs | wall | client CPU | peak RSS |",
        "|---|---|---|---:|---:|---:|",
    ]
    any_ratio = False
    for s in doc["scenarios"]:
        res = s["results"]
        for cid in STS_IDS:
            mine = res.get(cid)
            if not mine or _med(mine, "wall") is None:
                continue
            for oid, other in res.items():
                if oid in STS_IDS or _med(other, "wall") is None:
                    continue
                any_ratio = True
                cells = []
                for f in ("wall", "cpu", "rss"):
                    a, b = _med(mine, f), _med(other, f)
                    cells.append(f"{a / b:.2f}" if a is not None and b else "-")
                lines.append(
                    f"| {s['label']} | {mine['label']} | {other['label']} | "
                    + " | ".join(cells)
                    + " |"
                )
    if not any_ratio:
        lines.append("| (no sts-bridge contender in this run) | | | | | |")
    ts = doc.get("targets") or []
    if ts:
        lines += ["", "Targets:", "", "| target | measured | limit | |", "|---|---:|---:|---|"]
        for t in ts:
            meas = "-" if t["measured"] is None else f"{t['measured']:.2f}"
            flag = {True: "met", False: "**missed**", None: "?"}[t["met"]]
            note = f" ({t['note']})" if t.get("note") else ""
            lines.append(f"| {t['target']}{note} | {meas} | {t['limit']} | {flag} |")
    return "\n".join(lines) + "\n"


def update_readme(path: Path, md: str) -> bool:
    """Replace what lies between the bench markers, each alone on its line.

    False when the file has no such pair (markers quoted inside a sentence are
    not markers)."""
    if not path.exists():
        return False
    text = path.read_text()
    pattern = re.compile(
        r"^" + re.escape(MARK_START) + r"[ \t]*\n.*?^" + re.escape(MARK_END) + r"[ \t]*$",
        flags=re.S | re.M,
    )
    if not pattern.search(text):
        return False
    path.write_text(pattern.sub(lambda _m: f"{MARK_START}\n{md}{MARK_END}", text, count=1))
    return True
