import type { Redis } from 'ioredis';

export type ScriptArg = string | number | Buffer;

/** A Lua script on one connection: one atomic decision per call. */
export interface RedisScript {
  run(keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown>;
  /** the same, with bulk strings answered as Buffers (binary records) */
  runBuffer(keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown>;
}

/**
 * Defines `lua` on the connection with ioredis's defineCommand, which sends EVALSHA and loads the
 * script itself when a server does not know it yet (a new or restarted Redis).
 */
export function defineScript(redis: Redis, name: string, numberOfKeys: number, lua: string): RedisScript {
  redis.defineCommand(name, { numberOfKeys, lua });
  // defineCommand adds the command under its name at run time; its type cannot say so.
  const commands = redis as unknown as Record<string, (...args: ScriptArg[]) => Promise<unknown>>;
  const string = commands[name]!;
  const buffer = commands[`${name}Buffer`]!;
  return {
    run: (keys, args) => string.call(redis, ...keys, ...args),
    runBuffer: (keys, args) => buffer.call(redis, ...keys, ...args),
  };
}
