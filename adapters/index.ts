import type { AdapterFactory } from '../src/index.js';
import { createHttpAdapter } from './http/index.js';

/** Every protocol adapter the gateway runs; each starts only if its listener is configured. */
export const builtinAdapters: AdapterFactory[] = [createHttpAdapter];
