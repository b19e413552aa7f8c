// What differs between the settings of two runs, as the compare page says it: the condition, the
// seed, every setting of the configuration, and the recording policy (which steps and keys were
// stored, and as what), one "name A → B" entry each.

const NONE = "none";  // (a setting one run lacks, or has as null)

/** Nested settings as {"a.b": JSON text}; an empty object or null is a value of its own. */
function flat(x, prefix = "", out = {}) {
  if (x && typeof x === "object" && !Array.isArray(x) && Object.keys(x).length) {
    for (const [k, v] of Object.entries(x)) flat(v, `${prefix}${k}.`, out);
  } else if (prefix) out[prefix.slice(0, -1)] = x === null || x === undefined ? NONE : JSON.stringify(x);
  return out;
}

/**
 * ["condition control → bcl-slow", "lr 0.1 → 0.2", "policy.full_every none → 10", ...] for pages
 * A and B (each with `run`: condition, policy; and `info`: seed, config). A group one run has and
 * the other has not (control's bcl: null) is one entry, its settings in braces.
 */
export function settingsDiffer(A, B) {
  const out = [];
  const show = (v) => (v === null || v === undefined ? NONE : v);
  if (show(A.run.condition) !== show(B.run.condition)) out.push(`condition ${show(A.run.condition)} → ${show(B.run.condition)}`);
  if (show(A.info.seed) !== show(B.info.seed)) out.push(`seed ${show(A.info.seed)} → ${show(B.info.seed)}`);
  const settings = (p) => ({ ...flat(p.info.config), ...flat(p.run.policy, "policy.") });
  const fa = settings(A), fb = settings(B);
  const under = (f, k) => Object.keys(f).filter((x) => x.startsWith(`${k}.`));
  const covered = (f, k) => f[k] === undefined && Object.keys(f).some((p) => k.startsWith(`${p}.`));
  const value = (f, k) => (f[k] !== undefined ? f[k]
    : under(f, k).length ? `{${under(f, k).map((x) => `${x.slice(k.length + 1)} ${f[x]}`).join(", ")}}` : NONE);
  for (const k of [...new Set([...Object.keys(fa), ...Object.keys(fb)])]) {
    if (value(fa, k) !== value(fb, k) && !covered(fa, k) && !covered(fb, k)) out.push(`${k} ${value(fa, k)} → ${value(fb, k)}`);
  }
  return out;
}
