import type { ProtocolRegistration } from './adapter.js';
import type { TargetType } from './targets/target.js';

/** Protocol names the core keeps for itself: `internal` marks messages the gateway makes. */
const RESERVED_PROTOCOLS = new Set(['internal']);
/** Keys of gateway.yaml the core owns; a protocol's section takes another. */
export const CORE_SECTIONS = new Set([
  '$schema', 'listeners', 'log', 'limits', 'requests', 'shutdown', 'admin', 'deadletter', 'groups', 'auth',
  'breakers', 'targets', 'routes', 'defaultRoute',
]);
/** Listeners the core runs itself: the HTTP listener adapters mount paths on, and the admin one. */
export const CORE_LISTENERS = new Set(['http', 'admin']);

/**
 * The parts a gateway is built from: the protocols it speaks and the target types it calls.
 * Each registers a name, its config schema and a factory; the config loader builds the schema of
 * gateway.yaml from them (src/config/schema.ts), and the gateway creates adapters and targets
 * from them. An object rather than a global, so a test can build its own.
 */
export class Registry {
  readonly protocols: readonly ProtocolRegistration[];
  readonly targetTypes: readonly TargetType[];

  constructor(parts: { protocols?: readonly ProtocolRegistration[]; targetTypes?: readonly TargetType[] }) {
    this.protocols = parts.protocols ?? [];
    this.targetTypes = parts.targetTypes ?? [];
    const protocols = new Set<string>();
    const sections = new Set<string>();
    for (const { protocol, section, listener } of this.protocols) {
      if (RESERVED_PROTOCOLS.has(protocol) || protocols.has(protocol)) throw new Error(`protocol ${protocol} is reserved or registered twice`);
      protocols.add(protocol);
      if (section) {
        if (CORE_SECTIONS.has(section.key) || sections.has(section.key)) throw new Error(`protocol ${protocol}: config section ${section.key} is taken`);
        sections.add(section.key);
      }
      if (listener && CORE_LISTENERS.has(protocol)) throw new Error(`protocol ${protocol}: listeners.${protocol} belongs to the core`);
    }
    const types = new Set<string>();
    for (const { type } of this.targetTypes) {
      if (types.has(type)) throw new Error(`target type ${type} is registered twice`);
      types.add(type);
    }
  }

  /** A registry with these parts added. */
  with(parts: { protocols?: readonly ProtocolRegistration[]; targetTypes?: readonly TargetType[] }): Registry {
    return new Registry({
      protocols: [...this.protocols, ...(parts.protocols ?? [])],
      targetTypes: [...this.targetTypes, ...(parts.targetTypes ?? [])],
    });
  }

  targetType(type: string): TargetType | undefined {
    return this.targetTypes.find((t) => t.type === type);
  }

  /** Every protocol a message can come from: the registered ones and `internal`. */
  get protocolNames(): string[] {
    return [...this.protocols.map((p) => p.protocol), ...RESERVED_PROTOCOLS];
  }
}
