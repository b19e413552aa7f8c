// Stepping with the keyboard, on the run page and the compare page alike: arrow keys move one step
// (ten with Shift), Home and End go to the first and last step. Keys typed into a field, or with
// Ctrl, Cmd or Alt held, are left alone.

/** Listen for stepping keys on the document; `viewer` has `step`, `steps` and `go(step)`. */
export function stepWithKeys(viewer) {
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    const big = ev.shiftKey ? 10 : 1;
    const moves = { ArrowLeft: -big, ArrowRight: big };
    if (ev.key in moves) viewer.go(viewer.step + moves[ev.key]);
    else if (ev.key === "Home") viewer.go(0);
    else if (ev.key === "End") viewer.go(viewer.steps - 1);
    else return;
    ev.preventDefault();
  });
}
