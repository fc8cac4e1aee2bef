import { grpcProtocol } from '../adapters/grpc/index.js';
import { httpProtocol } from '../adapters/http/index.js';
import { mqttProtocol } from '../adapters/mqtt/index.js';
import { webSocketProtocol } from '../adapters/websocket/index.js';
import { Registry } from './registry.js';
import { grpcTargetType } from './targets/grpc.js';
import { httpTargetType } from './targets/http.js';

/**
 * What `junction` ships with: the one list of protocols and target types. A new protocol is a
 * folder under adapters/ and a line here; a new target type, a module under src/targets/ and a
 * line here.
 */
export const builtins = new Registry({
  protocols: [httpProtocol, grpcProtocol, mqttProtocol, webSocketProtocol],
  targetTypes: [httpTargetType, grpcTargetType],
});
