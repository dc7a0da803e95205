// Writes BUILD.json beside the bundle: a sha256 over the editor's sources (so a test without Node can tell
// the committed bundle was built from the committed sources) and the sha256 of each file built.
//
// The sources hash: for each input file, sorted by its path relative to console-editor/ (with "/"), the
// line "<path>\0<sha256 of its bytes in hex>\n"; the hash is the sha256 of all those lines. Inputs are
// package.json, package-lock.json, vite.config.js, stamp.mjs and every file under src/.
// tests/test_editor_bundle.py computes the same.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const outDir = process.env.EDITOR_OUT_DIR || join(here, "..", "src", "lunogram_server", "console", "static", "editor");
const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? walk(path) : [path];
  });
}

const inputs = ["package.json", "package-lock.json", "vite.config.js", "stamp.mjs"]
  .map((name) => join(here, name))
  .concat(walk(join(here, "src")))
  .map((path) => ({ path, name: relative(here, path).split(sep).join("/") }))
  .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

const lines = inputs.map(({ path, name }) => `${name}\0${sha256(readFileSync(path))}\n`).join("");
const outputs = Object.fromEntries(
  ["editor.js", "editor.css"].map((name) => [name, sha256(readFileSync(join(outDir, name)))]),
);
const build = {
  comment: "Written by `npm run build` in console-editor/; checked by tests/test_editor_bundle.py",
  sources_sha256: sha256(lines),
  sources: inputs.map(({ name }) => name),
  outputs_sha256: outputs,
};
writeFileSync(join(outDir, "BUILD.json"), `${JSON.stringify(build, null, 2)}\n`);
