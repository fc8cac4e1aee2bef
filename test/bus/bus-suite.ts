import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Bus } from '../../src/bus/index.js';
import { createMessage, type Message } from '../../src/message.js';
import { eventually } from '../helpers/eventually.js';

/** A bus under test, and how to release what it holds (connections, servers). */
export interface BusUnderTest {
  bus: Bus;
  /**
   * A second handle on the same bus when the implementation spans processes or nodes (its
   * deliveries cross the network); the same object for an in-process bus.
   */
  peer: Bus;
  dispose(): Promise<void>;
}

function message(key: string, text = key): Message {
  return createMessage({ key, payload: Buffer.from(text), source: { protocol: 'internal' } });
}

/** The texts one handler received, in order. */
function recorder(): { handler: (m: Message) => void; texts: string[] } {
  const texts: string[] = [];
  return { handler: (m) => texts.push(m.payload.toString()), texts };
}

function withoutMarkers(texts: string[]): string[] {
  return texts.filter((text) => !/^m\d+$/.test(text));
}

/**
 * The contract of src/bus/bus.ts, for every implementation. Deliveries may be asynchronous, so
 * "nothing arrives" is checked against a marker published after it on a subscription that does
 * receive: once the marker is in, whatever was published before it has been delivered.
 */
export function busSuite(name: string, create: () => Promise<BusUnderTest>): void {
  describe(`bus contract: ${name}`, () => {
    let under: BusUnderTest;
    let marker: { handler: (m: Message) => void; texts: string[] };
    let markers = 0;

    beforeEach(async () => {
      under = await create();
      marker = recorder();
      await under.bus.subscribe('marker', marker.handler);
    });

    afterEach(async () => {
      await under.dispose();
    });

    /** Publishes a marker from `from` and waits until it is delivered: everything published before it was. */
    async function settled(from: Bus = under.bus): Promise<void> {
      const text = `m${++markers}`;
      await from.publish(message('marker', text));
      await eventually(() => expect(marker.texts).toContain(text));
    }

    it('delivers to every subscription whose pattern matches, once each, and to no other', async () => {
      const exact = recorder();
      const plus = recorder();
      const hash = recorder();
      const other = recorder();
      await under.bus.subscribe('devices/d1/temp', exact.handler);
      await under.bus.subscribe('devices/+/temp', plus.handler);
      await under.bus.subscribe('devices/#', hash.handler);
      await under.bus.subscribe('devices/d2/#', other.handler);
      await under.peer.publish(message('devices/d1/temp', 'a'));
      await settled(under.peer);
      expect(exact.texts).toEqual(['a']);
      expect(plus.texts).toEqual(['a']);
      expect(hash.texts).toEqual(['a']);
      expect(other.texts).toEqual([]);
    });

    it('matches with MQTT rules: # takes its parent level, + takes an empty level, wildcards skip $ keys', async () => {
      const parent = recorder();
      const empty = recorder();
      const everything = recorder();
      const sys = recorder();
      await under.bus.subscribe('a/#', parent.handler);
      await under.bus.subscribe('x/+/y', empty.handler);
      await under.bus.subscribe('#', everything.handler);
      await under.bus.subscribe('$SYS/#', sys.handler);
      for (const key of ['a', 'x//y', '$SYS/uptime', 'x/y']) await under.bus.publish(message(key));
      await settled();
      expect(parent.texts).toEqual(['a']);
      expect(empty.texts).toEqual(['x//y']);
      expect(withoutMarkers(everything.texts)).toEqual(['a', 'x//y', 'x/y']);
      expect(sys.texts).toEqual(['$SYS/uptime']);
    });

    it('hands one subscription the messages of one publisher in the order they were published', async () => {
      const seen = recorder();
      await under.bus.subscribe('order/+', seen.handler);
      const sent = Array.from({ length: 200 }, (_, i) => `${i}`);
      for (const text of sent) void under.peer.publish(message(`order/${Number(text) % 3}`, text));
      await settled(under.peer);
      expect(seen.texts).toEqual(sent);
    });

    it('hands the published message unchanged: payload bytes, headers, ids', async () => {
      const got: Message[] = [];
      await under.bus.subscribe('bytes', (m) => got.push(m));
      const payload = Buffer.from([0, 255, 1, 254, 0x80]);
      const sent = createMessage({
        key: 'bytes', payload, headers: { 'x-a': 'b' }, priority: 7, qos: 1, contentType: 'application/octet-stream',
        replyTo: '_inbox/1', correlationId: 'c1', source: { protocol: 'http', principal: 'p' },
      });
      await under.peer.publish(sent);
      await settled(under.peer);
      expect(got).toHaveLength(1);
      const [m] = got;
      expect(Buffer.compare(m!.payload, payload)).toBe(0);
      expect(m).toMatchObject({
        id: sent.id, key: 'bytes', headers: { 'x-a': 'b' }, priority: 7, qos: 1, contentType: 'application/octet-stream',
        replyTo: '_inbox/1', correlationId: 'c1', traceparent: sent.traceparent, timestamp: sent.timestamp,
      });
    });

    it('stops delivering to a closed subscription, leaves the others alone, and closing twice is harmless', async () => {
      const first = recorder();
      const second = recorder();
      const one = await under.bus.subscribe('same', first.handler);
      await under.bus.subscribe('same', second.handler);
      expect(under.bus.subscriptionCount).toBe(3);
      await under.bus.publish(message('same', 'before'));
      await one.close();
      await one.close();
      expect(under.bus.subscriptionCount).toBe(2);
      await under.bus.publish(message('same', 'after'));
      await settled();
      expect(first.texts).toEqual(['before']);
      expect(second.texts).toEqual(['before', 'after']);
    });

    it('subscribeAll receives every message once, $ keys included, until closed', async () => {
      const all = recorder();
      const tap = await under.bus.subscribeAll(all.handler);
      await under.bus.publish(message('a/b', 'one'));
      await under.bus.publish(message('$internal/x', 'two'));
      await settled();
      expect(withoutMarkers(all.texts)).toEqual(['one', 'two']);
      await tap.close();
      await under.bus.publish(message('a/b', 'three'));
      await settled();
      expect(all.texts).not.toContain('three');
    });

    it('deliverToOne hands a request to one responder, in turn, never to plain subscribers', async () => {
      expect(await under.bus.deliverToOne(message('rpc/echo'))).toBe(false);
      const plain = recorder();
      await under.bus.subscribe('rpc/+', plain.handler);
      expect(await under.bus.deliverToOne(message('rpc/echo'))).toBe(false);
      const a = recorder();
      const b = recorder();
      await under.bus.subscribe('rpc/+', a.handler, { responder: true });
      const bSubscription = await under.bus.subscribe('rpc/#', b.handler, { responder: true });
      for (let i = 0; i < 10; i++) expect(await under.peer.deliverToOne(message('rpc/echo', `r${i}`))).toBe(true);
      await eventually(() => expect(a.texts.length + b.texts.length).toBe(10));
      expect(a.texts.length).toBe(5);
      expect(b.texts.length).toBe(5);
      expect(plain.texts).toEqual([]);
      await bSubscription.close();
      for (let i = 0; i < 4; i++) expect(await under.bus.deliverToOne(message('rpc/echo', `s${i}`))).toBe(true);
      await eventually(() => expect(a.texts.length).toBe(9));
      expect(b.texts.length).toBe(5);
    });

    it('a requests-only responder is handed requests and none of what is published', async () => {
      const responder = recorder();
      const subscription = await under.bus.subscribe('cmd/#', responder.handler, { responder: true, requestsOnly: true });
      await under.peer.publish(message('cmd/reboot', 'published'));
      expect(await under.peer.deliverToOne(message('cmd/reboot', 'asked'))).toBe(true);
      await eventually(() => expect(responder.texts).toEqual(['asked']));
      await settled();
      expect(responder.texts).toEqual(['asked']);
      await subscription.close();
      expect(await under.bus.deliverToOne(message('cmd/reboot'))).toBe(false);
    });

    it('keeps delivering to the others when one handler throws', async () => {
      const good = recorder();
      await under.bus.subscribe('boom', () => {
        throw new Error('a broken subscriber');
      });
      await under.bus.subscribe('boom', good.handler);
      await under.bus.publish(message('boom', 'x'));
      await settled();
      expect(good.texts).toEqual(['x']);
    });

    it('lets a handler publish, as a responder answering on an inbox does', async () => {
      const answers = recorder();
      await under.bus.subscribe('_inbox/1', answers.handler);
      await under.bus.subscribe('ask', (m) => {
        void under.bus.publish(message('_inbox/1', `re:${m.payload.toString()}`));
      });
      await under.peer.publish(message('ask', 'q'));
      await eventually(() => expect(answers.texts).toEqual(['re:q']));
    });

    it('refuses to publish or subscribe once closed', async () => {
      await under.bus.close();
      await expect(under.bus.publish(message('a'))).rejects.toThrow(/closed/);
      await expect(under.bus.subscribe('a', () => undefined)).rejects.toThrow(/closed/);
      await expect(under.bus.subscribeAll(() => undefined)).rejects.toThrow(/closed/);
    });
  });
}
