// Bundles the access explorer (explorer/ → src/http/explorer/ at the
// repository root, compiled into authzd): index.html as is, app.ts and its
// imports into one minified ES module app.js, style.css minified into
// app.css. No source maps, no hashes in names: the output depends only on
// the sources and the pinned esbuild, so scripts/test-clients.sh can check
// that the committed bundle is up to date.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "..", "..", "src", "http", "explorer");
mkdirSync(out, { recursive: true });
const common = { bundle: true, minify: true, sourcemap: false, legalComments: "none", metafile: true, logLevel: "warning", charset: "utf8" };
const js = await build({ ...common, entryPoints: [join(here, "app.ts")], outfile: join(out, "app.js"), format: "esm", platform: "browser", target: "es2022" });
const css = await build({ ...common, entryPoints: [join(here, "style.css")], outfile: join(out, "app.css") });
copyFileSync(join(here, "index.html"), join(out, "index.html"));
const size = (r) => Object.values(r.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`src/http/explorer: app.js ${(size(js) / 1024).toFixed(1)} KiB, app.css ${(size(css) / 1024).toFixed(1)} KiB`);
