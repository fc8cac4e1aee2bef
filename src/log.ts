import { pino, type Logger } from 'pino';
import { prettyFactory } from 'pino-pretty';
import type { LogLevel } from './config/types.js';

export type { Logger };

/** Where log lines go; a terminal (`isTTY`) gets them for people to read. */
export type LogDestination = NodeJS.WritableStream & { isTTY?: boolean };

/**
 * JSON, one object a line, for files, pipes and journald; one readable line per entry when a
 * person watches a terminal. LOG_LEVEL beats the config file so an operator can turn on debug
 * without editing it.
 */
export function createLogger(level: LogLevel, destination: LogDestination = process.stdout): Logger {
  const effective = (process.env.LOG_LEVEL as LogLevel | undefined) ?? level;
  const options = { level: effective, base: { service: 'junction' } };
  return pino(options, destination.isTTY ? readable(destination) : destination);
}

/**
 * Formats each line as it is written rather than through pino-pretty's stream, which pipes
 * asynchronously: the last lines before process.exit ("stopped") would be lost.
 */
function readable(destination: LogDestination): { write(line: string): void } {
  const format = prettyFactory({ colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'service' });
  return { write: (line) => void destination.write(format(line)) };
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
