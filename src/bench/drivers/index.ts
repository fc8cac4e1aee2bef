import type { BenchProtocol } from '../types.js';
import type { ProtocolDriver } from './driver.js';
import { grpcDriver } from './grpc.js';
import { httpDriver } from './http.js';
import { mqttDriver } from './mqtt.js';
import { wsDriver } from './ws.js';

const DRIVERS: Record<BenchProtocol, ProtocolDriver> = { mqtt: mqttDriver, ws: wsDriver, http: httpDriver, grpc: grpcDriver };

export function driverFor(protocol: BenchProtocol): ProtocolDriver {
  return DRIVERS[protocol];
}
