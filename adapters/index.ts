import type { ProtocolRegistration } from '../src/index.js';
import { grpcProtocol } from './grpc/index.js';
import { httpProtocol } from './http/index.js';
import { mqttProtocol } from './mqtt/index.js';
import { webSocketProtocol } from './websocket/index.js';

/** Every protocol the gateway runs; each starts only if its listener is configured. */
export const builtinProtocols: readonly ProtocolRegistration[] = [httpProtocol, grpcProtocol, mqttProtocol, webSocketProtocol];
