import { Type, type StaticDecode } from '@sinclair/typebox';
import { afterEach, describe, expect, it } from 'vitest';
import { builtins } from '../../src/builtins.js';
import { loadConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import {
  createMessage, Default, strict,
  type Adapter, type AdapterContext, type DispatchResult, type Message, type ProtocolRegistration, type Target, type TargetType,
} from '../../src/index.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { subscribeSse } from '../helpers/sse.js';

/**
 * A protocol and a target type defined here alone, registered beside the built-in ones: the
 * config loader takes their sections and keys, the gateway runs them, and a message routes from
 * one to the other and to the built-in protocols.
 */

const ProbeSection = Type.Object({ greeting: Default(Type.String({ minLength: 1 }), 'hello') }, strict);
type ProbeSettings = StaticDecode<typeof ProbeSection>;

/** The probe adapters the gateway created, for the test to drive. */
const probes: ProbeAdapter[] = [];

class ProbeAdapter implements Adapter {
  readonly received: Message[] = [];
  sent = 0;

  constructor(readonly ctx: AdapterContext<ProbeSettings>) {
    probes.push(this);
  }

  async register(): Promise<void> {
    await this.ctx.subscribe('out/#', (message) => this.received.push(message));
  }

  send(key: string, text: string): Promise<DispatchResult> {
    this.sent++;
    const payload = Buffer.from(`${this.ctx.settings().greeting} ${text}`);
    return this.ctx.dispatch(createMessage({ key, payload, qos: 1, source: { protocol: this.ctx.protocol, clientId: 'probe-1' } }));
  }

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  connections(): number {
    return 1;
  }
  stats() {
    return { counters: { sent: this.sent } };
  }
}

const probeProtocol: ProtocolRegistration<ProbeSettings> = {
  protocol: 'probe',
  section: { key: 'probe', schema: ProbeSection },
  create: (ctx) => new ProbeAdapter(ctx),
};

const MemoFields = Type.Object({ label: Type.String({ minLength: 1 }) });

/** What the memo targets the gateway created were handed, with their labels. */
const memos: { label: string; messages: Message[] }[] = [];

const memoTarget: TargetType<StaticDecode<typeof MemoFields> & { concurrency: number }> = {
  type: 'memo',
  fields: MemoFields.properties,
  create: (name, config): Target => {
    const memo = { label: config.label, messages: [] as Message[] };
    memos.push(memo);
    return {
      name,
      type: 'memo',
      deliver: async (message) => {
        memo.messages.push(message);
        return { payload: Buffer.from(`noted by ${config.label} (concurrency ${config.concurrency})`) };
      },
      close: async () => undefined,
    };
  },
};

const registry = builtins.with({ protocols: [probeProtocol], targetTypes: [memoTarget] });

const CONFIG = `
probe: { greeting: bonjour }
targets:
  notes: { type: memo, label: desk, concurrency: 3 }
routes:
  - { name: from-probe, match: { key: "in/+", protocols: [probe] }, to: [notes, { publish: "out/{1}" }] }
defaultRoute: publish
`;

describe('registered parts', () => {
  let gw: TestGateway | undefined;

  afterEach(async () => {
    await gw?.stop();
    gw = undefined;
    probes.length = 0;
    memos.length = 0;
  });

  it('routes a message from a registered protocol to a registered target type and to every subscriber', async () => {
    gw = await startGateway(CONFIG, registry);
    const sse = await subscribeSse(gw.http, 'out/#');
    const [probe] = probes;
    expect(await probe!.send('in/x', 'world')).toMatchObject({ id: expect.any(String) as unknown });
    await eventually(() => expect(memos[0]?.messages).toHaveLength(1));
    expect(memos[0]!.label).toBe('desk');
    expect(memos[0]!.messages[0]!.payload.toString()).toBe('bonjour world');
    await eventually(() => {
      expect(probe!.received.map((m) => m.key)).toEqual(['out/x']);
      expect(sse.messages.map((m) => m.payload)).toEqual(['bonjour world']);
    });
    sse.close();
    const stats = await (await fetch(`${gw.admin}/admin/stats`)).json() as { adapters: Record<string, { counters: Record<string, number> }> };
    expect(stats.adapters.probe!.counters.sent).toBe(1);
  });

  it('takes its schema from the registry: the parts are unknown to the built-in one, and checked by their own', () => {
    expect(() => loadConfigText(CONFIG, '', {})).toThrow(ConfigError);
    const builtin = issues(() => loadConfigText(CONFIG, '', {}));
    expect(builtin).toEqual(expect.arrayContaining([
      expect.stringContaining('unknown key "probe"'),
      expect.stringContaining('targets.notes.type: expected one of: http, grpc, got "memo"'),
      expect.stringContaining('routes[0].match.protocols[0]: expected one of: http, grpc, mqtt, ws, internal, got "probe"'),
    ]));
    const own = issues(() => loadConfigText(CONFIG.replace('label: desk', 'labl: desk').replace('greeting: bonjour', 'greeting: ""'), '', {}, registry));
    expect(own).toEqual(expect.arrayContaining([
      expect.stringContaining('probe.greeting'),
      expect.stringContaining('unknown key "labl"'),
    ]));
    expect(loadConfigText('targets: { notes: { type: memo, label: x } }', '', {}, registry).config.targets.notes).toMatchObject({ type: 'memo', label: 'x', concurrency: 64 });
  });
});

function issues(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}
