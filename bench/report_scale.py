"""bench_scale.py's Markdown report: what was measured, and the linear extrapolations to full size (labelled)."""
from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30
STAGES = ("ingest", "pools", "scores", "build", "tokenize")


def extrapolate(small: float, large: float, f_small: float, f_large: float, f_target: float = 1.0) -> float:
    """The line through (f_small, small) and (f_large, large), read at `f_target`."""
    return large + (large - small) / (f_large - f_small) * (f_target - f_large)


def report(r: dict) -> str:
    (f_small, small), (f, big) = sorted(((float(k), v) for k, v in r["runs"].items()), key=lambda kv: kv[0])
    sizes = big["sizes"]
    workers = r["workers"]
    lines = [
        "# Scale benchmark: synthetic MS MARCO-shaped collection (`bench/bench_scale.py`)",
        "",
        f"Commit `{r['commit']}`" + (f" (driver stages: `{r['driver_commit']}`)" if r.get("driver_commit") else "")
        + f", {r['cores']} cores, {r['memory_gib']:.0f} GiB memory. {_load_line(big, workers)}",
        "",
        "What was measured, and what extrapolated:",
        f"- **Driver stages: measured** at fractions {f_small:g} and **{f:g}** of MS MARCO passage ({sizes['passages']:,}"
        f" passages, {sizes['train_queries']:,} training queries × 150 run candidates, {sizes['dev_queries']:,} dev"
        " queries); **extrapolated** to fraction 1.0 (8.84M passages, 100k queries): peak memory along the line"
        " through the two measurements, time in proportion to the larger one. Collection: `bench/synthetic_msmarco.py` (passage lengths:"
        " a log-normal fitted to 5,000 real MS MARCO passages, shifted to MS MARCO's mean of 56 words; words from"
        " the tokenizer's vocabulary, Zipf).",
        f"- **Trial workers: measured** at {workers['queries']:,} training queries × 151 passages over"
        f" {workers['passages']:,} passages (a training set and its token ids written directly at that size, texts"
        f" empty, token ids random with the fitted lengths: {workers['write_seconds']:.0f} s to write), {r['steps']}"
        " steps each: batch 32 queries × (1 positive + 8 sampled), passage max length 128, the random-weight"
        " `tiny:bert` student (2 layers, hidden 32): only the plumbing is measured.",
        "",
        "## Driver stages (one process each; peak = psutil uss, sampled every 0.1 s)",
        "",
        f"| stage | what | s @ {f_small:g} | s @ {f:g} | peak uss MiB @ {f_small:g} | peak uss MiB @ {f:g} |"
        " s extrap. 1.0 | peak uss GiB extrap. 1.0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    what = {
        "ingest": "load_data of the training split: corpus.jsonl indexed by byte offset, texts not held",
        "pools": f"run file → pools ({big['pools']['pairs']:,} pairs @ {f:g})",
        "scores": f"scores file → teacher scores of the pools' pairs ({big['scores']['pairs']:,} @ {f:g})",
        "build": "driver `prepare_assets` from run + scores files: data, pools + the initial student's scores,"
                 " teacher arrays, training set, tokenise-once of its texts",
        "tokenize": f"tokenise-once of the whole corpus (an evaluation's), single-threaded tokenizer "
                    f"({big['tokenize']['passages_per_s']:,.0f} passages/s @ {f:g})",
    }
    full = {}
    for name in STAGES:
        a, b = small[name], big[name]
        seconds = b["seconds"] / f      # time: proportional to the larger run (two busy-machine timings are noisy)
        peak = extrapolate(a["peak_uss"], b["peak_uss"], f_small, f)
        full[name] = peak
        lines.append(f"| {name} | {what[name]} | {a['seconds']:.1f} | {b['seconds']:.1f} | {a['peak_uss'] / MiB:,.0f} |"
                     f" {b['peak_uss'] / MiB:,.0f} | {seconds:,.0f} | {peak / GiB:.2f} |")
    build = big["build"]
    lines += ["", f"Driver build breakdown @ {f:g} (s): " + ", ".join(
        f"{k.removesuffix('_seconds')} {build[k]:.1f}" for k in
        ("data_seconds", "pools_seconds", "teacher_seconds", "trainset_seconds", "tokenize_seconds")
        if build.get(k) is not None) + f"; peak RSS {build['peak_rss'] / MiB:,.0f} MiB.", ""]

    one, two, lists = workers["worker-0"], workers["two-workers"], workers["load-lists"]
    pair_uss = sum(w["uss_beyond"] for w in two)
    pair_pss = sum(w["pss_beyond"] for w in two)
    lines += workers_report(workers)
    lines += [
        f"For contrast, today's `TrainingSet.load` into Python lists of the same set: +{lists['uss_beyond'] / MiB:,.0f}"
        f" MiB uss after load (peak +{lists['peak_uss_beyond'] / MiB:,.0f} MiB), texts empty; the driver-built set @"
        f" {f:g} (real texts): +{big['load-lists']['uss_beyond'] / MiB:,.0f} MiB for"
        f" {big['load-lists']['queries']:,} queries.",
        "",
        "## Done-when targets",
        "",
        "| target | value | basis | met |",
        "|---|---:|---|---|",
        _target(f"worker uss beyond model+opt at {workers['queries']:,} queries ≤ 1 GiB", one["uss_beyond"] / GiB, 1.0,
                "GiB", "measured, loader_workers 0"),
        _target("two concurrent workers ≤ 1.3× one (uss beyond)", pair_uss / one["uss_beyond"], 1.3, "×", "measured"),
        _target("two concurrent workers ≤ 1.3× one (pss beyond)", pair_pss / one["pss_beyond"], 1.3, "×", "measured"),
        _target("driver peak ≤ 4 GiB building 100k-query assets", full["build"] / GiB, 4.0, "GiB",
                f"extrapolated from {f_small:g} and {f:g}"),
        _target("pipeline share of a step ≤ 5%", one["pipeline_share"] * 100, 5.0, "%",
                f"measured, {one['steps']} steps, loader_workers 0, CPU"),
        "",
    ]
    return "\n".join(lines)


def _load_line(driver: dict, workers: dict) -> str:
    """What else ran: the 1-min load average as each part started ("not recorded": a run from before it was)."""
    def said(part: dict) -> str:
        load = part.get("load_average")
        return "not recorded" if load is None else f"{load:.2f}"

    return (f"Load average (1 min) as the driver stages started: {said(driver)}; as the workers started:"
            f" {said(workers)} (it counts the bench writing the workers' set, too). Well above 0.5, other jobs"
            " shared the two cores, so seconds are upper bounds (memory is not affected).")


def workers_report(workers: dict) -> list[str]:
    """The trial-worker section: one row per worker run, and two concurrent workers against one alone."""
    one, two = workers["worker-0"], workers["two-workers"]
    pair_uss = sum(w["uss_beyond"] for w in two)
    pair_pss = sum(w["pss_beyond"] for w in two)
    lines = [
        f"## Trial workers ({workers['queries']:,} queries, measured)",
        "",
        "Beyond model + optimiser = the peak during load + steps minus the peak during two warm-up steps on random"
        " ids of full size, padded like real batches (model, AdamW state, a step's activations). uss counts pages only this process (and its"
        " loader workers) holds; a mapped page another process also maps leaves everyone's uss. pss splits a shared"
        " page between its sharers, so the pss of two workers adds up to what they use together.",
        "",
        "At the end of the steps, against after the warm-up: heap grown = anonymous memory added (the plan, the"
        " allocator's retained free blocks); private file pages = mapped pages of the training set no other process"
        " maps (shared, and out of uss, once a second worker maps them).",
        "",
        "| worker | load s | first batch s | uss beyond after load MiB | peak uss beyond MiB | peak pss beyond MiB |"
        " heap grown MiB | private file pages MiB | step s | waits for its batch ms | pipeline share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("alone, loader_workers 0", one)] + ([("alone, loader_workers 1", workers["worker-1"])]
                                                 if "worker-1" in workers else [])
    for label, w in (*rows, *((f"two at once: worker {i + 1}", w) for i, w in enumerate(two))):
        lines.append(f"| {label} | {w['load_seconds']:.2f} | {w['first_wait_seconds']:.2f} |"
                     f" {w['uss_beyond_after_load'] / MiB:,.1f} | {w['uss_beyond'] / MiB:,.1f} |"
                     f" {w['pss_beyond'] / MiB:,.1f} | {_mib(w, 'anonymous_grown')} | {_mib(w, 'private_file_pages')} |"
                     f" {w['step_seconds']:.3f} | {w['wait_seconds'] * 1000:.2f} | {w['pipeline_share']:.2%} |")
    return lines + [
        "",
        f"Two workers at once: uss beyond {pair_uss / MiB:,.1f} MiB together = {pair_uss / one['uss_beyond']:.2f}× one"
        f" worker alone; pss beyond {pair_pss / MiB:,.1f} MiB = {pair_pss / one['pss_beyond']:.2f}× one alone.",
        "",
    ]


def _mib(worker: dict, key: str) -> str:
    """`key` in MiB, or – for results written before the bench recorded it."""
    return f"{worker[key] / MiB:,.1f}" if key in worker else "–"


def _target(name: str, value: float, limit: float, unit: str, basis: str) -> str:
    return f"| {name} | {value:.2f} {unit} | {basis} | {'yes' if value <= limit else '**no**'} |"
