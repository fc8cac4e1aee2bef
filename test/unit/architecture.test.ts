import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

/** The lint rule that keeps adapters to the core's public module, run on probe sources. */
async function importProblems(file: string, source: string): Promise<string[]> {
  const [result] = await new ESLint().lintText(source, { filePath: file });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('adapter boundaries (eslint.config.js)', () => {
  it('lets an adapter import the core through src/index.js and its own folder', async () => {
    const source = "import { GatewayError } from '../../src/index.js';\nimport { x } from './mapping.js';\nexport const y = [GatewayError, x];\n";
    expect(await importProblems('adapters/mqtt/probe.ts', source)).toEqual([]);
  });

  it("refuses the core's internals and another adapter's folder", async () => {
    const source = "import { LocalBus } from '../../src/bus/index.js';\nimport { sendProblem } from '../http/index.js';\nexport const y = [LocalBus, sendProblem];\n";
    expect(await importProblems('adapters/mqtt/probe.ts', source)).toHaveLength(2);
  });
});
