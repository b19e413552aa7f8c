// Key and dimension names are the user's: one named like a property every JS object has
// (toString, constructor, __proto__) is a name like any other.
import assert from "node:assert/strict";
import test from "node:test";

import { addPageHelpers } from "../../viewer/static/data.js";

test("a dimension named toString, constructor or __proto__ has its size", () => {
  const arrays = {};
  ["toString", "constructor", "__proto__", "unit"].forEach((dim, i) => {
    arrays[`tensors/k${i}`] = { dims: ["step", dim], shape: [9, 3 + i] };
  });
  const page = addPageHelpers({ arrays, run: { policy: {} } });
  assert.equal(page.dimSize("toString"), 3);
  assert.equal(page.dimSize("constructor"), 4);
  assert.equal(page.dimSize("__proto__"), 5);
  assert.equal(page.dimSize("unit"), 6);
  assert.equal(page.dimSize("hasOwnProperty"), undefined);
});
