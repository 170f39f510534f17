// Parses an AsyncAPI document with the official parser: prints every diagnostic, and
// fails on errors. Usage: node asyncapi_check.mjs FILE.json
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const [file] = process.argv.slice(2);
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
// Severity 0 is an error; 1 a warning, 2 information, 3 a hint.
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${["error", "warning", "info", "hint"][d.severity]}: ${d.code}: ${d.message} at ${JSON.stringify(d.path)}`);
}
if (errors.length > 0 || !document) {
  console.log(`asyncapi: ${errors.length} errors`);
  process.exit(1);
}
console.log(`asyncapi: valid (${document.operations().length} operations, ${document.messages().length} messages)`);
