import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { beforeAll, describe, expect, it } from 'vitest';

/**
 * Every default lives in a schema (src/config/schema.ts, or a protocol's section in
 * adapters/<protocol>/config.ts) and is applied by the loader, so code elsewhere reads config
 * values as they are. This finds `x ?? y` where `x` is read from the config and `y`
 * is a literal or another config value: a second home for a default. It asks the type checker
 * where `x` is declared rather than matching names, so `message.qos ?? 1` (the message model's
 * own default) or a counter's `?? 0` are left alone.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CONFIG_DIR = path.join(ROOT, 'src/config') + path.sep;
/** where config keys are declared: the core's schema, and each protocol's section */
const isConfigModule = (file: string): boolean => file.startsWith(CONFIG_DIR) || /[/\\]adapters[/\\][^/\\]+[/\\]config\.ts$/.test(file);
const SCANNED = [path.join(ROOT, 'src') + path.sep, path.join(ROOT, 'adapters') + path.sep];

/** Fallbacks a scan must find: a file that is not on disk, compiled with the project. */
const FIXTURE = path.join(ROOT, 'src/fallback-fixture.ts');
const FIXTURE_TEXT = [
  "import type { GatewayConfig } from './config/types.js';",
  "import type { MqttSettings } from '../adapters/mqtt/config.js';",
  'declare const config: GatewayConfig;',
  'declare const mqtt: MqttSettings;',
  'export const hold = mqtt.maxHold ?? 10_000;',
  "export const burst = config.targets.x?.rateLimit?.burst ?? config.targets.x?.rateLimit?.rate;",
  "export const breaker = config.breakers['x'] ?? {};",
  "export const mode = config.routes[0]?.mode ?? 'deliver';",
].join('\n');

function isLiteral(node: ts.Expression): boolean {
  return ts.isNumericLiteral(node) || ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)
    || node.kind === ts.SyntaxKind.TrueKeyword || node.kind === ts.SyntaxKind.FalseKeyword
    || ts.isArrayLiteralExpression(node) || ts.isObjectLiteralExpression(node)
    || (ts.isPrefixUnaryExpression(node) && ts.isNumericLiteral(node.operand));
}

function scan(): string[] {
  const parsed = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
  if (!parsed) throw new Error('cannot read tsconfig.json');
  const host = ts.createCompilerHost(parsed.options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.getSourceFile = (file, language, ...rest) => (file === FIXTURE ? ts.createSourceFile(file, FIXTURE_TEXT, language) : getSourceFile(file, language, ...rest));
  host.fileExists = (file) => file === FIXTURE || fileExists(file);
  const program = ts.createProgram([...parsed.fileNames, FIXTURE], { ...parsed.options, noEmit: true }, host);
  const checker = program.getTypeChecker();

  const declaredInConfig = (symbol: ts.Symbol | undefined): boolean =>
    symbol?.declarations?.some((d) => isConfigModule(d.getSourceFile().fileName)) ?? false;
  /** a property of the config, or a value whose type is one of the config's objects */
  const readsConfig = (node: ts.Expression): boolean => {
    if (ts.isPropertyAccessExpression(node) && declaredInConfig(checker.getSymbolAtLocation(node.name))) return true;
    return checker.getNonNullableType(checker.getTypeAtLocation(node)).getProperties().some(declaredInConfig);
  };

  const found: string[] = [];
  for (const source of program.getSourceFiles()) {
    const file = source.fileName;
    if (!SCANNED.some((dir) => file.startsWith(dir)) || isConfigModule(file)) continue;
    const visit = (node: ts.Node): void => {
      if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.QuestionQuestionToken
        && readsConfig(node.left) && (isLiteral(node.right) || readsConfig(node.right))) {
        const { line } = source.getLineAndCharacterOfPosition(node.getStart());
        found.push(`${path.relative(ROOT, file)}:${line + 1}: ${node.getText()}`);
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return found;
}

describe('fallback defaults outside src/config', () => {
  let found: string[] = [];
  // Type-checking the whole project takes seconds, more on a busy machine.
  beforeAll(() => {
    found = scan();
  }, 180_000);

  it('are found when a fallback reads the config', () => {
    expect(found.filter((f) => f.startsWith('src/fallback-fixture.ts'))).toEqual([
      'src/fallback-fixture.ts:5: mqtt.maxHold ?? 10_000',
      'src/fallback-fixture.ts:6: config.targets.x?.rateLimit?.burst ?? config.targets.x?.rateLimit?.rate',
      "src/fallback-fixture.ts:7: config.breakers['x'] ?? {}",
      "src/fallback-fixture.ts:8: config.routes[0]?.mode ?? 'deliver'",
    ]);
  });

  it('are none in src/ and adapters/', () => {
    expect(found.filter((f) => !f.startsWith('src/fallback-fixture.ts'))).toEqual([]);
  });
});
