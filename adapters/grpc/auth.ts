import type { Metadata } from '@grpc/grpc-js';
import { GatewayError, tokenFromAuthorization, type AccessControl, type ClientCertificate, type Identity } from '../../src/index.js';

/**
 * Who makes each call. gRPC has no handshake to authenticate once: every call carries its
 * credentials (`authorization` metadata, Bearer with an API key, a JWT or username:password, or
 * Basic, as on HTTP and WebSocket), or, without them, the connection's client certificate on a
 * mutual-TLS listener. The shared auth layer remembers verified secrets, so a call does not pay
 * the password hash each time.
 */
export async function identify(metadata: Metadata, access: AccessControl, address: string | undefined, certificate: ClientCertificate | undefined): Promise<Identity> {
  const value = metadata.get('authorization')[0];
  return access.authenticate({ token: value === undefined ? undefined : tokenFromAuthorization(String(value)) }, { listener: 'grpc', address, certificate });
}

export function forbidden(action: string, what: string): GatewayError {
  return new GatewayError('forbidden', `not allowed to ${action} ${what}`);
}
