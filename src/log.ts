import { pino, type Logger } from 'pino';
import type { LogLevel } from './config/types.js';

export type { Logger };

/** LOG_LEVEL beats the config file so an operator can turn on debug without editing it. */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const effective = (process.env.LOG_LEVEL as LogLevel | undefined) ?? level;
  return pino({ level: effective, base: { service: 'junction' } }, destination ?? process.stdout);
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
