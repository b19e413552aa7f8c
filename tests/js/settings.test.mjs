// The compare page's "Settings that differ": the condition, seed, configuration and recording policy.
import assert from "node:assert/strict";
import test from "node:test";

import { settingsDiffer } from "../../viewer/static/settings.js";

const policy = (over = {}) => ({ full_every: null, full_steps: [], large_float: "float32", only: null, ...over });
const page = (condition, seed, config, pol = policy()) => ({ run: { condition, policy: pol }, info: { seed, config } });

test("the same settings say nothing", () => {
  assert.deepEqual(settingsDiffer(page("bcl-slow", 0, { lr: 0.001 }), page("bcl-slow", 0, { lr: 0.001 })), []);
});

test("a recording policy that differs is a setting that differs", () => {
  const a = page("bcl-slow", 0, { lr: 0.001 }), d = page("bcl-slow", 0, { lr: 0.001 }, policy({ full_every: 10, only: ["loss", "rank_score"] }));
  assert.deepEqual(settingsDiffer(a, d), ['policy.full_every none → 10', 'policy.only none → ["loss","rank_score"]']);
});

test("what one run lacks or has as null reads none, one word", () => {
  const bcl = page("bcl-slow", 0, { lr: 0.001, bcl: { som_lr: 0.01, k: 8 } });
  const control = page("control", 1, { lr: 0.001, bcl: null });
  assert.deepEqual(settingsDiffer(control, bcl), ["condition control → bcl-slow", "seed 1 → 0", "bcl none → {som_lr 0.01, k 8}"]);
  const loop = page(null, undefined, { lr: 0.001, data: { dataset: "MNIST" } }, undefined);
  const said = settingsDiffer(bcl, loop).join("; ");
  assert.ok(!said.includes("null") && !said.includes("undefined"), said);
  assert.ok(said.includes("condition bcl-slow → none") && said.includes('data.dataset none → "MNIST"'), said);
});
