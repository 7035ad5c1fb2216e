package dev.nbd.server;

import java.util.function.Supplier;

import io.netty.handler.ssl.SslContext;

/**
 * TLS for the listener. The context is looked up per connection, so a reloaded certificate
 * applies to the next client without a restart.
 *
 * @param context supplies the server context (with client-auth already configured)
 * @param required FORCEDTLS: every option but STARTTLS and ABORT gets {@code NBD_REP_ERR_TLS_REQD}
 */
public record TlsSettings(Supplier<SslContext> context, boolean required) {
}
