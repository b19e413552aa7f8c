// Live stepping, when `acc-capture serve` serves the page (it marks the page; a static server's
// page never gets here, so it never asks an API that is not there). While GET inspect/state says
// a session is active, the toolbar shows Step, Step x10 and Step x50. A press POSTs inspect/step,
// keeps the buttons disabled while the server trains, then shows the newest step without a
// reload: the answer's steps_completed grows the viewer (see Viewer.grow in app.js).
// A session on another recording (POST inspect/setup made one) reloads the page to show it.
import { formatValue } from "./stats.js";

const $ = (sel) => document.querySelector(sel);

export class Live {
  constructor(viewer, api) {
    this.viewer = viewer;
    this.api = api;
    this.box = $("#live");
    this.buttons = [...this.box.querySelectorAll('[data-act="train"]')];
    this.status = $("#live-status");
    this.path = null;      // the session's recording, as the server names it
    this.running = false;  // a press of ours waits for its answer
    this.timer = null;
    for (const b of this.buttons) b.addEventListener("click", () => this.train(Number(b.dataset.n)));
    document.addEventListener("visibilitychange", () => { if (!document.hidden && !this.running) this.probe(); });
    this.probe();
  }

  url(path) {
    return new URL(path, this.api);
  }

  setState(state) {
    this.box.dataset.state = state;  // off | idle | busy (tests wait on it)
    this.box.hidden = state === "off" && !this.status.textContent;
    for (const b of this.buttons) {
      b.hidden = state === "off";
      b.disabled = state !== "idle";
    }
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
    if (!state.active) {
      // (an error that said why stays on screen)
      if (this.path !== null && !this.status.classList.contains("error")) this.say("the live session was closed");
      this.setState("off");
      return;
    }
    this.path = state.path;
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
    if (state.total_steps > this.viewer.steps) await this.viewer.grow(state.total_steps);
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
      const r = await fetch(this.url("step"), {
        method: "POST", cache: "no-store", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ n }),
      });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
      answer = body;
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
