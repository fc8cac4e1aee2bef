import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, type LogDestination } from '../../src/log.js';

/** A destination that keeps what is written; `isTTY` as a terminal's stdout has it. */
function capture(isTTY: boolean): { stream: LogDestination; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _encoding, done) { chunks.push(chunk.toString()); done(); } }) as LogDestination;
  if (isTTY) stream.isTTY = true;
  return { stream, text: () => chunks.join('') };
}

// eslint-disable-next-line no-control-regex
const plain = (text: string) => text.replace(/\u001b\[[0-9;]*m/g, '');

describe('logs', () => {
  it('are one readable line per entry on a terminal, written at once', () => {
    const out = capture(true);
    createLogger('info', out.stream).info({ listener: 'http', address: '127.0.0.1:8080' }, 'listener up');
    expect(plain(out.text())).toMatch(/^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO: listener up \{"listener":"http","address":"127\.0\.0\.1:8080"\}\n$/);
  });

  it('are JSON, one object a line, anywhere else', () => {
    const out = capture(false);
    createLogger('info', out.stream).warn({ target: 'orders' }, 'breaker open');
    const entry = JSON.parse(out.text()) as Record<string, unknown>;
    expect(entry).toMatchObject({ level: 40, service: 'junction', target: 'orders', msg: 'breaker open' });
  });
});
