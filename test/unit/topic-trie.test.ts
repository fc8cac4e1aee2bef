import { describe, expect, it } from 'vitest';
import { TopicTrie } from '../../src/topic/trie.js';

/** Deterministic PRNG (mulberry32) so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** MQTT filter matching written as directly from the spec as possible, to check the trie against. */
function referenceMatch(pattern: string, key: string): string[] | undefined {
  const p = pattern.split('/');
  const k = key.split('/');
  if (key.startsWith('$') && (p[0] === '+' || p[0] === '#')) return undefined;
  const captures: string[] = [];
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#') {
      captures.push(k.slice(i).join('/'));
      return captures;
    }
    if (i >= k.length) return undefined;
    if (p[i] === '+') captures.push(k[i]!);
    else if (p[i] !== k[i]) return undefined;
  }
  return p.length === k.length ? captures : undefined;
}

describe('TopicTrie', () => {
  it('agrees with a brute-force matcher on random keys and patterns', () => {
    const random = prng(20240607);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const keyLevels = ['a', 'b', 'c', '', '$s'];
    const patternLevels = ['a', 'b', '', '+', '+', '$s'];
    const path = (levels: readonly string[]): string =>
      Array.from({ length: 1 + Math.floor(random() * 5) }, () => pick(levels)).join('/');

    for (let round = 0; round < 10; round++) {
      const patterns = Array.from({ length: 60 }, () => {
        const base = path(patternLevels);
        const r = random();
        return r < 0.05 ? '#' : r < 0.3 ? `${base}/#` : base;
      });
      const trie = new TopicTrie<number>();
      patterns.forEach((pattern, i) => trie.add(pattern, i));
      expect(trie.size).toBe(patterns.length);
      for (let n = 0; n < 400; n++) {
        const key = path(keyLevels);
        const got: string[] = [];
        trie.match(key, (i, captures) => got.push(JSON.stringify([i, captures])));
        const want: string[] = [];
        patterns.forEach((pattern, i) => {
          const captures = referenceMatch(pattern, key);
          if (captures !== undefined) want.push(JSON.stringify([i, captures]));
        });
        expect({ key, matches: got.sort() }).toEqual({ key, matches: want.sort() });
      }
    }
  });

  it('matches patterns deeper than the call stack would allow with recursion', () => {
    const depth = 50_000;
    const trie = new TopicTrie<string>();
    trie.add(Array(depth).fill('+').join('/'), 'deep');
    const seen: number[] = [];
    trie.match(Array(depth).fill('x').join('/'), (value, captures) => seen.push(captures.length));
    expect(seen).toEqual([depth]);
  });

  it('lets a visitor match again on the same trie', () => {
    const trie = new TopicTrie<string>();
    trie.add('a/+', 'outer');
    trie.add('b/+', 'inner');
    const seen: string[] = [];
    trie.match('a/1', (value, captures) => {
      trie.match('b/2', (v, c) => seen.push(`${v}:${c.join()}`));
      seen.push(`${value}:${captures.join()}`);
    });
    expect(seen).toEqual(['inner:2', 'outer:1']);
  });

  it('forgets removed values, and agrees with a brute-force matcher while patterns come and go', () => {
    const random = prng(7);
    const levels = ['a', 'b', '', '+', '$s'];
    const pattern = (): string => {
      const base = Array.from({ length: 1 + Math.floor(random() * 4) }, () => levels[Math.floor(random() * levels.length)]!).join('/');
      return random() < 0.25 ? `${base}/#` : base;
    };
    const trie = new TopicTrie<number>();
    const live = new Map<number, string>();
    for (let step = 0; step < 3000; step++) {
      if (live.size > 0 && random() < 0.45) {
        const ids = [...live.keys()];
        const id = ids[Math.floor(random() * ids.length)]!;
        expect(trie.remove(live.get(id)!, id)).toBe(true);
        live.delete(id);
      } else {
        const p = pattern();
        trie.add(p, step);
        live.set(step, p);
      }
      if (step % 50 !== 0) continue;
      expect(trie.size).toBe(live.size);
      for (const key of ['a', 'a/b', 'a//b', '$s/a', 'b/a/a', 'a/b/a/b/a']) {
        const got: number[] = [];
        trie.match(key, (id) => got.push(id));
        const want = [...live].filter(([, p]) => referenceMatch(p, key) !== undefined).map(([id]) => id);
        expect({ key, got: got.sort((x, y) => x - y) }).toEqual({ key, got: want.sort((x, y) => x - y) });
      }
    }
    for (const [id, p] of live) trie.remove(p, id);
    expect(trie.size).toBe(0);
    const left: number[] = [];
    trie.match('a/b', (id) => left.push(id));
    expect(left).toEqual([]);
  });

  it('removes one occurrence of a value at a time, and reports values it does not hold', () => {
    const trie = new TopicTrie<string>();
    trie.add('a/+', 'x');
    trie.add('a/+', 'x');
    expect(trie.remove('a/#', 'x')).toBe(false);
    expect(trie.remove('a/+', 'y')).toBe(false);
    expect(trie.remove('a/+', 'x')).toBe(true);
    const seen: string[] = [];
    trie.match('a/1', (value) => seen.push(value));
    expect(seen).toEqual(['x']);
  });
});
