import { isMap, isScalar, isSeq, type Document, type Node as YamlNode } from 'yaml';
import type { Reporter, Segment } from './yaml-document.js';

const REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const VARIABLE = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

/**
 * Expands `${VAR}` and `${VAR:-default}` in string values (not keys: they are names the schema
 * fixes). Returns the scalars that could not be expanded, so that schema errors about their
 * leftover `${…}` text do not bury the real cause.
 */
export function substituteEnv(doc: Document.Parsed, env: NodeJS.ProcessEnv, report: Reporter): Set<YamlNode> {
  const unresolved = new Set<YamlNode>();
  const visit = (node: unknown, segments: Segment[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key)) visit(pair.value, [...segments, String(pair.key.value)]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => visit(item, [...segments, i]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      const problems: string[] = [];
      const expanded = expand(node.value, env, problems);
      if (problems.length > 0) {
        unresolved.add(node);
        for (const problem of problems) report.at(segments, problem);
        return;
      }
      // Unquoted text is typed like YAML would type it, so `port: ${PORT:-8080}` is a number.
      node.value = node.type === 'PLAIN' && !node.tag ? resolvePlain(expanded, doc) : expanded;
    }
  };
  visit(doc.contents, []);
  return unresolved;
}

function expand(text: string, env: NodeJS.ProcessEnv, problems: string[]): string {
  return text.replace(REFERENCE, (whole: string, body: string | undefined) => {
    if (whole === '$${') return '${';
    if (body === undefined) {
      problems.push('unterminated ${; write $${ for a literal ${');
      return whole;
    }
    const m = VARIABLE.exec(body);
    if (!m) {
      problems.push(`invalid reference ${whole}; expected \${NAME} or \${NAME:-default}`);
      return whole;
    }
    const name = m[1]!;
    const fallback = m[2];
    const value = env[name];
    // shell semantics: `:-` also replaces an empty value
    if (fallback !== undefined && (value === undefined || value === '')) return fallback;
    if (value !== undefined) return value;
    problems.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
    return whole;
  });
}

function resolvePlain(text: string, doc: Document.Parsed): unknown {
  for (const tag of doc.schema.tags) {
    if (tag.collection === undefined && tag.default === true && tag.test?.test(text)) {
      return tag.resolve(text, () => undefined, doc.options);
    }
  }
  return text;
}
