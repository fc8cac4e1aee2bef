import { EventSource } from 'undici';

export interface SseMessage {
  id: string;
  key: string;
  payload: string;
  encoding?: 'base64';
  contentType?: string;
  headers: Record<string, string>;
  priority: number;
  traceparent: string;
  replyTo?: string;
  correlationId?: string;
}

/** A real EventSource client that collects every `message` event of one subscription. */
export interface SseSubscriber {
  messages: SseMessage[];
  close(): void;
}

export async function subscribeSse(baseUrl: string, pattern: string, query = ''): Promise<SseSubscriber> {
  const source = new EventSource(`${baseUrl}/v1/subscribe/${encodeURIComponent(pattern).replaceAll('%2F', '/')}${query}`);
  const messages: SseMessage[] = [];
  source.addEventListener('message', (event) => messages.push(JSON.parse(String(event.data)) as SseMessage));
  await new Promise<void>((resolve, reject) => {
    source.onopen = () => resolve();
    source.onerror = () => reject(new Error(`SSE subscription to ${pattern} failed`));
  });
  return { messages, close: () => source.close() };
}

export function payloadBytes(message: SseMessage): Buffer {
  return message.encoding === 'base64' ? Buffer.from(message.payload, 'base64') : Buffer.from(message.payload, 'utf8');
}
