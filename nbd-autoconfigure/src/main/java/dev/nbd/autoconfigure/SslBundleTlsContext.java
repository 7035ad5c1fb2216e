package dev.nbd.autoconfigure;

import java.util.function.Supplier;

import javax.net.ssl.SSLException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.ssl.SslBundle;
import org.springframework.boot.ssl.SslBundles;
import org.springframework.boot.ssl.SslOptions;

import io.netty.handler.ssl.ClientAuth;
import io.netty.handler.ssl.SslContext;
import io.netty.handler.ssl.SslContextBuilder;

/**
 * A Netty server {@link SslContext} made from a Spring Boot SSL bundle, rebuilt when the bundle
 * reloads, so rotated certificates apply to the next connection without a restart.
 */
class SslBundleTlsContext implements Supplier<SslContext> {

	private static final Logger logger = LoggerFactory.getLogger(SslBundleTlsContext.class);

	private final String bundleName;

	private final ClientAuth clientAuth;

	private volatile SslContext context;

	SslBundleTlsContext(SslBundles bundles, String bundleName, NbdServerProperties.ClientAuth clientAuth) {
		this.bundleName = bundleName;
		this.clientAuth = switch (clientAuth) {
			case NONE -> ClientAuth.NONE;
			case WANT -> ClientAuth.OPTIONAL;
			case NEED -> ClientAuth.REQUIRE;
		};
		this.context = build(bundles.getBundle(bundleName));
		bundles.addBundleUpdateHandler(bundleName, (bundle) -> {
			try {
				this.context = build(bundle);
				logger.info("SSL bundle '{}' reloaded: new NBD connections use the new certificates", bundleName);
			}
			catch (RuntimeException ex) {
				// A half-written rotation must not take TLS down: keep serving the last good context.
				logger.error("SSL bundle '{}' changed but cannot be used; NBD keeps the previous certificates",
						bundleName, ex);
			}
		});
	}

	@Override
	public SslContext get() {
		return this.context;
	}

	private SslContext build(SslBundle bundle) {
		try {
			SslContextBuilder builder = SslContextBuilder.forServer(bundle.getManagers().getKeyManagerFactory())
				.clientAuth(this.clientAuth);
			if (this.clientAuth != ClientAuth.NONE) {
				builder.trustManager(bundle.getManagers().getTrustManagerFactory());
			}
			SslOptions options = bundle.getOptions();
			if (options.getEnabledProtocols() != null) {
				builder.protocols(options.getEnabledProtocols());
			}
			if (options.getCiphers() != null) {
				builder.ciphers(java.util.List.of(options.getCiphers()));
			}
			return builder.build();
		}
		catch (SSLException ex) {
			throw new IllegalStateException("SSL bundle '" + this.bundleName + "' cannot make a TLS server context", ex);
		}
	}

}
