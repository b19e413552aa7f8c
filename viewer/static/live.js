// Live stepping, when `acc-capture serve` serves the page (it marks the page; a static server's
// page never gets here, so it never asks an API that is not there). While GET inspect/state says
// a session is active, the toolbar shows Step, Step x10 and Step x50. A press POSTs inspect/step,
// keeps the buttons disabled while the server trains, then shows the newest step without a
// reload: the answer's steps_completed grows the viewer (see Viewer.grow in app.js).
// Setup (with a condition choice) POSTs inspect/setup: the server closes the session and serves a
// new recording of that condition at step 0, which the page reloads to show. Teardown POSTs
// inspect/teardown: the session closes, its recording stays complete. A session on another
// recording (a Setup here or elsewhere) reloads the page to show it.
const $ = (sel) => document.querySelector(sel);

// the conditions a Setup offers when the server's state does not list them (GET inspect/state `conditions`)
const CONDITIONS = ["control", "bcl-slow", "bcl-med", "bcl-fast"];

export class Live {
  constructor(viewer, api) {
    this.viewer = viewer;
    this.api = api;
    this.box = $("#live");
    this.buttons = [...this.box.querySelectorAll('[data-act="train"]')];
    this.setupButton = this.box.querySelector('[data-act="setup"]');
    this.teardownButton = this.box.querySelector('[data-act="teardown"]');
    this.condition = $("#live-condition");
    this.status = $("#live-status");
    this.path = null;      // the session's recording, as the server names it
    this.running = false;  // a press of ours waits for its answer
    this.tornDown = false; // our Teardown closed the session
    this.timer = null;
    for (const b of this.buttons) b.addEventListener("click", () => this.train(Number(b.dataset.n)));
    this.setupButton.addEventListener("click", () => this.setup());
    this.teardownButton.addEventListener("click", () => this.teardown());
    this.condition.addEventListener("change", () => this.labelSetup());
    this.offer(CONDITIONS, viewer.page.run.condition);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !this.running) this.probe(); });
    this.probe();
  }

  url(path) {
    return new URL(path, this.api);
  }

  /** The conditions to choose from for a Setup; `chosen` (if one of them) selected. */
  offer(conditions, chosen) {
    const keep = this.condition.value || chosen;
    this.condition.replaceChildren(...conditions.map((c) => new Option(c, c)));
    this.condition.value = conditions.includes(keep) ? keep : conditions[0];
    this.labelSetup();
  }

  labelSetup() {
    this.setupButton.textContent = `Setup (${this.condition.value})`;
  }

  setState(state) {
    this.box.dataset.state = state;  // off | idle | busy (tests wait on it)
    this.box.hidden = false;  // a live page can always set up a session
    for (const b of [...this.buttons, this.teardownButton]) {
      b.hidden = state === "off";
      b.disabled = state !== "idle";
    }
    this.setupButton.disabled = this.condition.disabled = state === "busy";
  }

  say(text, error = false) {
    this.status.textContent = text;
    this.status.title = text;
    this.status.classList.toggle("error", error);
  }

  /** Ask the server what the session is doing; show or hide the buttons accordingly. */
  async probe() {
    let state;
    try {
      const r = await fetch(this.url("state"), { cache: "no-store" });
      if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
      state = await r.json();
    } catch (err) {
      this.say(`live session unreachable: ${err.message}`, true);
      this.setState("off");
      return;
    }
    if (state.active && this.path !== null && state.path !== this.path) {
      location.reload();  // the server now serves the session's new recording
      return;
    }
    if (Array.isArray(state.conditions) && state.conditions.length) this.offer(state.conditions);
    if (!state.active) {
      // (an error that said why stays on screen)
      if (!this.status.classList.contains("error")) {
        this.say(this.path !== null && !this.tornDown ? "the live session was closed" : "inactive");
      }
      this.setState("off");
      return;
    }
    const first = this.path === null;
    this.path = state.path;
    this.tornDown = false;
    $("#run-status").textContent = "recording: live session (acc-capture serve), the Step buttons append steps";
    if (state.busy) {
      if (!this.running) {
        this.say(`training ${state.running_steps} steps (asked elsewhere)…`);
        this.setState("busy");
        setTimeout(() => this.probe(), 1000);
      }
      return;
    }
    if (!this.running) this.setState("idle");
    if (first && !this.running) this.say(`Ready, step ${state.total_steps}`);
    if (state.total_steps > this.viewer.steps) await this.viewer.grow(state.total_steps);
  }

  /** POST inspect/setup: a new recording of the chosen condition at step 0, which the page then shows. */
  async setup() {
    if (this.running) return;
    const condition = this.condition.value;
    this.running = true;
    this.setState("busy");
    this.say(`setting up ${condition}…`);
    try {
      await this.post("setup", { condition, seed: 0 });
    } catch (err) {
      this.running = false;
      this.say(`setup failed: ${err.message}`, true);
      await this.probe();
      return;
    }
    history.replaceState(null, "", location.pathname + location.search);  // step 0 of the new recording
    location.reload();
  }

  /** POST inspect/teardown: the session closes; its recording stays complete and resumable. */
  async teardown() {
    if (this.running) return;
    this.running = true;
    this.setState("busy");
    try {
      await this.post("teardown", {});
    } catch (err) {
      this.running = false;
      this.say(`teardown failed: ${err.message}`, true);
      await this.probe();
      return;
    }
    this.running = false;
    this.tornDown = true;
    this.say("inactive");
    this.setState("off");
  }

  /** POST a JSON body to the API; the JSON answer, or an Error saying why not. */
  async post(path, body) {
    const r = await fetch(this.url(path), {
      method: "POST", cache: "no-store", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(answer.error || `${r.status} ${r.statusText}`);
    return answer;
  }

  async train(n) {
    if (this.running) return;
    this.running = true;
    this.setState("busy");
    const t0 = performance.now();
    const label = `training ${n} step${n === 1 ? "" : "s"}…`;
    this.say(label);
    this.timer = setInterval(() => this.say(`${label} ${Math.round((performance.now() - t0) / 1000)} s`), 1000);
    let answer = null;
    try {
      answer = await this.post("step", { n });
    } catch (err) {
      this.stop();
      this.say(`step failed: ${err.message}`, true);
      await this.probe();  // steps recorded before a failure are shown all the same
      if (this.box.dataset.state === "off") this.say("step failed: the live session is closed", true);
      return;
    }
    this.stop();
    if (answer.path !== this.path) {
      location.reload();
      return;
    }
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    this.say(`recorded ${n} step${n === 1 ? "" : "s"} in ${seconds} s`);
    this.setState("idle");
    try {
      await this.viewer.grow(answer.steps_completed);
    } catch (err) {
      this.say(`could not show the new steps: ${err.message}`, true);
    }
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    this.running = false;
  }
}
