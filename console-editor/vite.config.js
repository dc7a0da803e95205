// Builds the journey editor into one IIFE script (window.LunogramJourneyEditor) and one stylesheet, written
// into the server's static folder so that `lunogram serve` ships them without Node. The output must be the
// same bytes wherever it is built (tests/test_editor_bundle.py compares a fresh build with the committed one):
// no hashes in names, no source maps, no absolute paths, one chunk.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));
const outDir = process.env.EDITOR_OUT_DIR || `${here}../src/lunogram_server/console/static/editor`;

export default defineConfig({
  root: here,
  logLevel: "warn",
  define: { "process.env.NODE_ENV": JSON.stringify("production") },
  oxc: { jsx: { runtime: "automatic" } },
  build: {
    outDir,
    emptyOutDir: false, // BUILD.json and anything else there stay
    copyPublicDir: false,
    sourcemap: false,
    minify: true,
    target: "es2020",
    reportCompressedSize: false,
    lib: {
      entry: `${here}src/main.jsx`,
      name: "LunogramJourneyEditor",
      formats: ["iife"],
      fileName: () => "editor.js",
      cssFileName: "editor",
    },
    rolldownOptions: {
      // @xyflow/react starts with "use client" (for React Server Components): meaningless in this bundle
      onwarn(warning, warn) {
        if (warning.code !== "MODULE_LEVEL_DIRECTIVE") warn(warning);
      },
    },
  },
});
