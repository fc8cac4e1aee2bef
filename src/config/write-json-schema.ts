import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { builtins } from '../builtins.js';
import { gatewayConfigSchema } from './schema.js';

/**
 * gateway.yaml's schema, for what `junction` ships with, as plain JSON Schema for editors
 * (yaml-language-server and the like). TypeBox schemas already are JSON Schema; the JSON round
 * trip drops TypeBox's symbol keys and transform functions.
 */
export function gatewayJsonSchema(): object {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    ...(JSON.parse(JSON.stringify(gatewayConfigSchema(builtins))) as object),
  };
}

/** The text of schema/gateway.schema.json, as committed. */
export function gatewayJsonSchemaText(): string {
  return `${JSON.stringify(gatewayJsonSchema(), null, 2)}\n`;
}

/** Runs from dist/src/config/, so the project root is three folders up. */
const OUTPUT = fileURLToPath(new URL('../../../schema/gateway.schema.json', import.meta.url));

async function main(): Promise<void> {
  await mkdir(path.dirname(OUTPUT), { recursive: true });
  await writeFile(OUTPUT, gatewayJsonSchemaText());
  process.stdout.write(`wrote ${path.relative(process.cwd(), OUTPUT)}\n`);
}

// Importing the module (for gatewayJsonSchema) must not write files.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
