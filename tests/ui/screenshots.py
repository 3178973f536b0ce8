"""Screenshots of the Prefect and MLflow UIs after two quick runs, taken in a real browser.

    .venv-ui/bin/python tests/ui/screenshots.py --out DIR      (or: make ui-screenshots OUT=DIR)

Runs in its own venv (.venv-ui, from requirements-ui.lock: only Playwright) with Debian's Chromium
(apt-get install chromium), so it imports nothing of shrinkflow, Prefect or MLflow: it drives the
project's CLI (`.venv/bin/shrinkflow up`) as a subprocess and talks to both servers over HTTP.
Not named test_*.py: pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
SHRINKFLOW = REPO / ".venv" / "bin" / "shrinkflow"
DEPLOYMENT = "shrinkflow/digits_cnn"
SWEEP_DEPLOYMENT = "shrinkflow-sweep/digits_sweep"
NAME = "digits_ui_check"
SWEEP_NAME = "digits_sweep_ui_check"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google services on a closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
UP_TIMEOUT, RUN_TIMEOUT = 300.0, 600.0


def free_ports(count: int) -> list[int]:
    # Hold every socket until all are chosen, so the same port is not handed out twice.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_json(url: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


class Stack:
    """`shrinkflow up` in a fresh workspace; its output is echoed (prefixed) so a failure explains itself."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.prefect_port, self.mlflow_port = free_ports(2)
        self.api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.prefect_ui = f"http://127.0.0.1:{self.prefect_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen[str] | None = None
        self.mlflow_link = self.mlflow  # the MLflow UI address `up` prints, once it has printed it

    def start(self) -> None:
        # The caller's Prefect/MLflow settings (a profile, a tracking URI) must not leak into the stack.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        self.proc = subprocess.Popen(
            [str(SHRINKFLOW), "up", "--workspace", str(self.workspace),
             "--prefect-port", str(self.prefect_port), "--mlflow-port", str(self.mlflow_port)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # Its own session: a Ctrl-C at the terminal interrupts this script, whose clean-up stops `up`.
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + UP_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"`shrinkflow up` not ready after {UP_TIMEOUT:.0f} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise SystemExit(f"`shrinkflow up` exited with code {self.proc.wait()} before it was ready")
            if line.strip().startswith("MLflow UI"):
                self.mlflow_link = line.split()[-1]
            if "Press Ctrl-C to stop" in line:
                return

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"  up| {line}", end="", file=sys.stderr, flush=True)
            self.lines.put(line)
        self.lines.put(None)

    def stop(self) -> int | None:
        """Ctrl-C to `up`, as a user stops it; returns its exit code (None: it did not stop)."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        # Whatever happened above, leave no server or runner behind.
        subprocess.run([str(SHRINKFLOW), "down", "--workspace", str(self.workspace)], cwd=REPO, check=False)
        return code


def quick_run(stack: Stack, deployment_name: str = DEPLOYMENT, name: str = NAME, **sections: dict[str, Any]) -> tuple[str, str]:
    """Start a small run of the deployment as the UI's Run button does, with the config `sections` edited too;
    returns (deployment id, flow run id)."""
    deployment = http_json(f"{stack.api}/deployments/name/{deployment_name}")
    parameters = deployment["parameters"]
    config = parameters["config"]
    for section, values in sections.items():
        config[section].update(values)
    config["name"] = name
    config["train"]["epochs"] = 2
    config["model"]["conv_filters"] = [8]
    config["model"]["hidden_units"] = [16]
    config["prune"]["epochs"] = 1
    config["quantize"]["qat_epochs"] = 1
    run = http_json(f"{stack.api}/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
    print(f"flow run {run['name']} ({run['id']}) started", file=sys.stderr)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        state = http_json(f"{stack.api}/flow_runs/{run['id']}")["state"]
        if state["type"] == "COMPLETED":
            return deployment["id"], run["id"]
        if state["type"] in ("FAILED", "CRASHED", "CANCELLED"):
            raise SystemExit(f"flow run {run['id']} ended {state['type']}: {state.get('message')}")
        time.sleep(3)
    raise SystemExit(f"flow run {run['id']} not finished after {RUN_TIMEOUT:.0f} s")


def settle(page: Page, seconds: float = 2.0) -> None:
    # Both UIs poll their APIs, so network idle may never come: best effort, then let the SPA paint.
    try:
        page.wait_for_load_state("networkidle", timeout=15_000)
    except Exception:
        pass
    page.wait_for_timeout(seconds * 1000)


# Both UIs scroll inside an inner element, not the window, so Playwright's full_page alone captures only
# the viewport: grow the viewport by what the scrollers hide. Where asked, small scrolling boxes (a run's
# params, a version's tags) are first unclipped so all their rows show; not everywhere, as some pages pair
# two boxes that scroll together, and never virtualised grids (MLflow's runs table), which draw only the
# rows in view.
SCROLLERS_JS = """[...document.querySelectorAll('*')].filter(el => {
    const overflow = getComputedStyle(el).overflowY;
    return (overflow === 'auto' || overflow === 'scroll') && el.scrollHeight > el.clientHeight + 2;
})"""
UNCLIP_JS = f"""() => {{ for (let pass = 0; pass < 5; pass++) {{  // an unclipped box may overflow its parent
    const boxes = {SCROLLERS_JS}.filter(el => el.clientHeight < window.innerHeight * 0.7 && !el.closest('.ag-root'));
    for (const el of boxes) {{  // !important beats the UIs' own; 'overflow' as one axis alone stays 'auto'
        for (const [name, value] of [['max-height', 'none'], ['height', 'auto'], ['overflow', 'visible']]) {{
            el.style.setProperty(name, value, 'important');
        }}
    }}
    if (!boxes.length) break;
}} }}"""
HIDDEN_HEIGHT_JS = f"() => Math.max(0, ...{SCROLLERS_JS}.map(el => el.scrollHeight - el.clientHeight))"
MAX_HEIGHT = 16000  # the Run form of the whole config is taller than the 9,000 px this was


def shot(
    page: Page, out: Path, name: str, url: str | None = None,
    seconds: float = 2.0, parts: int = 1, unclip: bool = False,
) -> list[Path]:
    """A full-page screenshot, or `parts` slices of it when the page is too long to read as one image."""
    if url is not None:
        page.goto(url)
    settle(page, seconds)
    if unclip:
        page.evaluate(UNCLIP_JS)
    height, last = VIEWPORT["height"], None
    for _ in range(3):  # virtualised lists render more rows once the viewport grows
        hidden = page.evaluate(HIDDEN_HEIGHT_JS)
        if hidden < 2 or height >= MAX_HEIGHT or (last is not None and hidden >= last):
            break  # (the last: a box sized to the viewport would grow with it forever)
        last = hidden
        height = min(MAX_HEIGHT, height + hidden)
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
        page.wait_for_timeout(1000)
    height = max(height, page.evaluate("document.documentElement.scrollHeight"))
    paths = []
    step = -(-height // parts)
    for part in range(parts):
        path = out / (f"{name}-{part + 1}.png" if parts > 1 else f"{name}.png")
        clip = {"x": 0, "y": part * step, "width": VIEWPORT["width"], "height": min(step, height - part * step)}
        page.screenshot(path=str(path), full_page=True, clip=clip)
        paths.append(path)
        print(f"  {path.name}  {page.url}", file=sys.stderr)
    page.set_viewport_size(VIEWPORT)
    return paths


def click_if_present(page: Page, selector: str) -> None:
    locator = page.locator(selector)
    for index in range(locator.count()):
        locator.nth(index).click()
        page.wait_for_timeout(300)


def artifact_shot(page: Page, out: Path, name: str, run_url: str, path: str) -> list[Path]:
    """A run's artifact `path`, chosen in the run's artifact tree as a user does: going to another artifact's
    address from an artifact page keeps showing the first one (the address changes only after its #)."""
    page.goto(f"{run_url}/artifacts?workflowType=machine_learning")
    settle(page, 3)
    for part in path.split("/"):  # folders open, then the file shows
        page.get_by_text(part, exact=True).first.click(timeout=10_000)
        page.wait_for_timeout(800)
    return shot(page, out, name, seconds=3)


def click_tab(page: Page, title: str) -> None:
    # Prefect's tabs are plain buttons, not ARIA tabs.
    page.get_by_text(title, exact=True).first.click(timeout=10_000)


def prefect_shots(page: Page, stack: Stack, out: Path, deployment_id: str, flow_run_id: str) -> list[Path]:
    ui = stack.prefect_ui
    shots = shot(page, out, "prefect-01-deployments", f"{ui}/deployments")
    shots += shot(page, out, "prefect-02-deployment", f"{ui}/deployments/deployment/{deployment_id}")
    page.goto(f"{ui}/deployments/deployment/{deployment_id}")
    settle(page)
    click_tab(page, "Upcoming")
    shots += shot(page, out, "prefect-03-deployment-upcoming")
    # "Run > Custom run": the config is one object parameter, drawn as nested described sections.
    shots += shot(page, out, "prefect-04-run-form", f"{ui}/deployments/deployment/{deployment_id}/run", 3, parts=4)

    run_url = f"{ui}/runs/flow-run/{flow_run_id}"
    page.goto(run_url)
    settle(page, 3)
    # Tabs are clicked, as a user does: going from ?tab=Logs to ?tab=Artifacts by address still showed Logs.
    for tab, seconds in (("Task Runs", 2), ("Logs", 3), ("Artifacts", 2)):
        click_tab(page, tab)
        shots += shot(page, out, f"prefect-05-flow-run-{tab.lower().replace(' ', '-')}", seconds=seconds)
    artifacts = http_json(f"{stack.api}/artifacts/filter", {
        "artifacts": {"key": {"any_": ["shrinkflow-summary"]}, "flow_run_id": {"any_": [flow_run_id]}}, "limit": 1,
    })
    if artifacts:
        shots += shot(page, out, "prefect-06-summary-artifact", f"{ui}/artifacts/artifact/{artifacts[0]['id']}")
    return shots


def mlflow_shots(page: Page, stack: Stack, out: Path) -> list[Path]:
    api, ui = f"{stack.mlflow}/api/2.0/mlflow", f"{stack.mlflow}/#"
    exp_id = http_json(f"{api}/experiments/get-by-name?experiment_name={NAME}")["experiment"]["experiment_id"]
    runs = http_json(f"{api}/runs/search", {"experiment_ids": [exp_id], "max_results": 200})["runs"]

    def parent_of(run: dict) -> str | None:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}.get("mlflow.parentRunId")

    parents = sorted((r for r in runs if parent_of(r) is None), key=lambda r: r["info"]["start_time"])
    parent = parents[0]["info"]["run_id"]  # the first run trained every variant; the second may reuse the cache
    children = [r["info"]["run_id"] for r in runs if parent_of(r) == parent]
    print(f"MLflow: {len(parents)} parent runs, {len(children)} child runs of {parent}", file=sys.stderr)

    # As a first-time visitor sees it, coming from the link `shrinkflow up` prints (MLflow's assistant panel
    # opens by itself), then the experiment as the flow run's `mlflow-run` artifact links to it: in the saved view
    # of the decisive columns.
    shots = shot(page, out, "mlflow-01-experiments", stack.mlflow_link, seconds=3)
    click_if_present(page, "[data-component-id='mlflow.assistant.chat_panel.close']")
    page.goto(f"{ui}/experiments/{exp_id}/runs?viewStateShareKey=shrinkflow-decisive&workflowType=machine_learning")
    settle(page, 3)
    click_if_present(page, "[data-component-id='mlflow.detect_issues.guidance.got_it']")
    click_if_present(page, "[data-component-id='mlflow.experiment.metadata_editor.expand_button']")
    # Parent runs start collapsed: open each so its child runs (the variants) show.
    click_if_present(page, "button[data-component-id*='runnamecellrenderer']")
    shots += shot(page, out, "mlflow-03-experiment-runs")
    # As the flow run's `mlflow-run` artifact links to it: in the model-training view.
    page.goto(f"{ui}/experiments/{exp_id}/runs/{parent}?workflowType=machine_learning")
    settle(page, 3)
    click_if_present(page, "text='Show more'")  # the whole description, whose first line is its links
    shots += shot(page, out, "mlflow-04-parent-run", seconds=1, unclip=True)
    shots += artifact_shot(page, out, "mlflow-04b-pareto-png", f"{ui}/experiments/{exp_id}/runs/{parent}", "comparison/pareto.png")
    compare = urllib.parse.urlencode({"runs": json.dumps(children), "experiments": json.dumps([exp_id])})
    page.goto(f"{ui}/compare-runs?{compare}")
    settle(page, 4)
    page.get_by_text("Artifacts", exact=True).last.click()  # empty previews, as tall as the window
    shots += shot(page, out, "mlflow-05-compare-child-runs")
    shots += shot(page, out, "mlflow-06-registered-model", f"{ui}/models/{NAME}", seconds=3)
    shots += shot(page, out, "mlflow-07-model-version", f"{ui}/models/{NAME}/versions/1", 3, unclip=True)
    return shots


def sweep_shots(page: Page, stack: Stack, out: Path, deployment_id: str, flow_run_id: str) -> list[Path]:
    """The sweep deployment's Run form, its flow run, and its MLflow sweep parent: trials, Pareto plot, chosen trial."""
    ui = stack.prefect_ui
    shots = shot(page, out, "sweep-01-run-form", f"{ui}/deployments/deployment/{deployment_id}/run", 3, parts=4)
    # The whole form is taller than MAX_HEIGHT: the sweep section's own settings (trials, time budget, quality
    # floor) below its search space, in view.
    page.get_by_text("Time budget (minutes)").first.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    shots.append(out / "sweep-01-run-form-sweep-settings.png")
    page.screenshot(path=str(shots[-1]))
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
    settle(page, 3)
    click_tab(page, "Logs")
    shots += shot(page, out, "sweep-02-flow-run-logs", seconds=3)
    api, mlflow_ui = f"{stack.mlflow}/api/2.0/mlflow", f"{stack.mlflow}/#"
    exp_id = http_json(f"{api}/experiments/get-by-name?experiment_name={SWEEP_NAME}")["experiment"]["experiment_id"]
    runs = http_json(f"{api}/runs/search", {"experiment_ids": [exp_id], "max_results": 200})["runs"]
    [parent] = [r for r in runs if any(t["key"] == "shrinkflow.sweep_study" for t in r["data"].get("tags", []))]
    parent_id = parent["info"]["run_id"]
    page.goto(f"{mlflow_ui}/experiments/{exp_id}/runs?workflowType=machine_learning")
    settle(page, 3)
    click_if_present(page, "button[data-component-id*='runnamecellrenderer']")
    shots += shot(page, out, "sweep-03-mlflow-runs")
    shots += shot(page, out, "sweep-04-mlflow-sweep-parent", f"{mlflow_ui}/experiments/{exp_id}/runs/{parent_id}", 3, unclip=True)
    for name in ("pareto.png", "trials.md"):
        shots += artifact_shot(page, out, f"sweep-05-{name.replace('.', '-')}", f"{mlflow_ui}/experiments/{exp_id}/runs/{parent_id}", name)
    trials = http_json(f"{stack.api}/artifacts/filter", {
        "artifacts": {"key": {"any_": ["sweep-trials"]}, "flow_run_id": {"any_": [flow_run_id]}}, "limit": 1,
    })
    if trials:
        shots += shot(page, out, "sweep-06-trials-artifact", f"{ui}/artifacts/artifact/{trials[0]['id']}")
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for the PNG files (created).")
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not SHRINKFLOW.exists():
        raise SystemExit(f"{SHRINKFLOW} is missing: run `make setup` first")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")

    with tempfile.TemporaryDirectory(prefix="shrinkflow-ui-") as tmp:
        stack = Stack(Path(tmp) / "workspace")
        try:
            stack.start()
            deployment_id, first = quick_run(stack)
            quick_run(stack)  # a second parent run of the same experiment, to compare in MLflow
            # The sweep deployment's Run button, with a few tiny trials.
            sweep_id, sweep_run = quick_run(stack, SWEEP_DEPLOYMENT, SWEEP_NAME, sweep={"trials": 4})
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=VIEWPORT)
                shots = prefect_shots(page, stack, out, deployment_id, first)
                shots += mlflow_shots(page, stack, out)
                shots += sweep_shots(page, stack, out, sweep_id, sweep_run)
                browser.close()
        finally:
            code = stack.stop()
    print("\n".join(str(path) for path in shots))
    if code != 0:
        print(f"`shrinkflow up` did not stop cleanly on Ctrl-C (exit code {code})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
