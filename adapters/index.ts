import type { AdapterFactory } from '../src/index.js';
import { createGrpcAdapter } from './grpc/index.js';
import { createHttpAdapter } from './http/index.js';
import { createMqttAdapter } from './mqtt/index.js';
import { createWebSocketAdapter } from './websocket/index.js';

/** Every protocol adapter the gateway runs; each starts only if its listener is configured. */
export const builtinAdapters: AdapterFactory[] = [createHttpAdapter, createGrpcAdapter, createMqttAdapter, createWebSocketAdapter];
