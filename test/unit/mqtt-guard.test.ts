import { Duplex } from 'node:stream';
import mqtt from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { GuardedConnection } from '../../adapters/mqtt/guard.js';

/** A socket that records each system call a write would be: one entry per _write or _writev, with its packets. */
class RecordingSocket extends Duplex {
  readonly calls: Buffer[][] = [];

  override _read(): void {}

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.calls.push([chunk]);
    callback();
  }

  override _writev(chunks: { chunk: Buffer }[], callback: () => void): void {
    this.calls.push(chunks.map((c) => c.chunk));
    callback();
  }
}

function guarded(): { socket: RecordingSocket; connection: GuardedConnection } {
  const socket = new RecordingSocket();
  const connection = new GuardedConnection(socket, 1 << 20, { remoteAddress: undefined, listener: 'mqtt', certificate: undefined }, () => {});
  return { socket, connection };
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function publish(payload: string): mqtt.IPublishPacket {
  return { cmd: 'publish', topic: 't', payload: Buffer.from(payload), qos: 0, retain: false, dup: false };
}

/** the PUBLISH payloads in one recorded call, parsed back */
function payloads(chunks: Buffer[]): string[] {
  const parser = mqtt.parser();
  const found: string[] = [];
  parser.on('packet', (packet) => found.push((packet as mqtt.IPublishPacket).payload.toString()));
  parser.parse(Buffer.concat(chunks));
  return found;
}

describe('GuardedConnection writes', () => {
  it('sends the packets written in one turn of the event loop, each from an immediate of its own as aedes writes deliveries, in one call', async () => {
    const { socket, connection } = guarded();
    await new Promise<void>((resolve) => {
      setImmediate(() => mqtt.writeToStream(publish('a'), connection));
      setImmediate(() => mqtt.writeToStream(publish('b'), connection));
      setImmediate(() => {
        mqtt.writeToStream(publish('c'), connection);
        resolve();
      });
    });
    expect(socket.calls).toEqual([]);
    await nextTurn();
    expect(socket.calls.map(payloads)).toEqual([['a', 'b', 'c']]);

    mqtt.writeToStream(publish('d'), connection);
    await nextTurn();
    expect(socket.calls.map(payloads)).toEqual([['a', 'b', 'c'], ['d']]);
  });

  it('sends the turn\'s packets of every connection written to in it at the start of the next turn', async () => {
    const subscribers = [guarded(), guarded(), guarded()];
    await new Promise<void>((resolve) => {
      setImmediate(() => {
        for (const [i, { connection }] of subscribers.entries()) mqtt.writeToStream(publish(`to ${i}`), connection);
        resolve();
      });
    });
    expect(subscribers.map(({ socket }) => socket.calls.length)).toEqual([0, 0, 0]);
    await nextTurn();
    expect(subscribers.map(({ socket }) => socket.calls.map(payloads))).toEqual([[['to 0']], [['to 1']], [['to 2']]]);
  });

  it('sends what it holds back before it would make the socket look full, so a turn of large packets finds no full socket', async () => {
    const { socket, connection } = guarded();
    const large = (name: string) => name + 'x'.repeat(socket.writableHighWaterMark * 0.4);
    const wrote = [large('a'), large('b'), large('c')].map((payload) => {
      const accepted = mqtt.writeToStream(publish(payload), connection);
      return { accepted, needsDrain: connection.needsDrain, outbound: connection.outboundBytes };
    });
    expect(wrote.every((w) => w.accepted && !w.needsDrain && w.outbound < socket.writableHighWaterMark)).toBe(true);
    await nextTurn();
    // two calls: the first before the third packet's payload would have reached the mark, the second next turn
    expect(socket.calls).toHaveLength(2);
    expect(payloads(socket.calls.flat()).map((p) => p[0])).toEqual(['a', 'b', 'c']);
  });

  it('sends what was written before the connection is destroyed in the same turn', () => {
    const { socket, connection } = guarded();
    mqtt.writeToStream(publish('last words'), connection);
    connection.destroy();
    expect(socket.calls.map(payloads)).toEqual([['last words']]);
  });
});
