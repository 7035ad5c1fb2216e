package dev.nbd.autoconfigure;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBooleanProperty;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.ssl.SslBundles;
import org.springframework.context.ApplicationEventPublisher;
import org.springframework.context.annotation.Bean;
import org.springframework.core.env.Environment;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.Cidr;
import dev.nbd.server.MultiConnMode;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;
import dev.nbd.server.NbdServerListener;
import dev.nbd.server.TlsSettings;

/**
 * Serves every {@link ExportBackend} bean and every {@code nbd.exports.*} export over NBD.
 */
@AutoConfiguration(after = SslAutoConfiguration.class)
@ConditionalOnBooleanProperty(name = "nbd.server.enabled", matchIfMissing = true)
@EnableConfigurationProperties({ NbdServerProperties.class, NbdExportProperties.class })
public final class NbdServerAutoConfiguration {

	private static final Logger logger = LoggerFactory.getLogger(NbdServerAutoConfiguration.class);

	@Bean(destroyMethod = "close")
	@ConditionalOnMissingBean
	PropertyExports nbdPropertyExports(NbdExportProperties properties) {
		return new PropertyExports(properties);
	}

	@Bean
	@ConditionalOnMissingBean
	NbdServer nbdServer(NbdServerProperties properties, NbdExportProperties exportProperties,
			PropertyExports propertyExports, ObjectProvider<ExportBackend> exportBeans,
			ObjectProvider<NbdServerListener> listeners, ObjectProvider<NbdServerCustomizer> customizers,
			ObjectProvider<SslBundles> sslBundles) {
		List<ExportBackend> backends = new ArrayList<>(propertyExports.backends());
		exportBeans.orderedStream().forEach(backends::add);
		Set<String> names = backends.stream().map(ExportBackend::name).collect(Collectors.toSet());
		Map<String, MultiConnMode> modes = new HashMap<>();
		Map<String, List<Cidr>> allowLists = new HashMap<>();
		exportProperties.getExports().forEach((name, export) -> {
			if (!names.contains(name)) {
				throw new IllegalStateException("nbd.exports." + name
						+ " has no type and no ExportBackend bean is named '" + name + "'");
			}
			modes.put(name, export.getMultiConn());
			allowLists.put(name, export.getAllowedAddresses().stream().map(Cidr::parse).toList());
		});
		if (backends.isEmpty()) {
			logger.warn("NBD server has no exports: declare nbd.exports.* or ExportBackend beans");
		}
		NbdServerConfig.Builder builder = NbdServerConfig.builder()
			.address(properties.getAddress())
			.port(properties.getPort())
			.maxConnections(properties.getMaxConnections())
			.maxInFlight(properties.getMaxInFlight())
			.maxPayload(toIntBytes(properties.getMaxPayload().toBytes(), "nbd.server.max-payload"))
			.maxInFlightBytes(properties.getMaxInFlightBytes().toBytes())
			.handshakeTimeout(properties.getHandshakeTimeout())
			.idleTimeout((properties.getIdleTimeout() != null) ? properties.getIdleTimeout() : Duration.ZERO)
			.writeStallTimeout(properties.getWriteStallTimeout())
			.drainTimeout(properties.getDrainTimeout())
			.busyPoll(properties.getBusyPoll())
			.sendBufferSize((properties.getSendBufferSize() == null) ? NbdServerConfig.ADAPTIVE_SEND_BUFFER
					: (properties.getSendBufferSize().toBytes() == 0) ? 0
							: toIntBytes(properties.getSendBufferSize().toBytes(), "nbd.server.send-buffer-size"))
			.allowedAddresses(properties.getAllowedAddresses().stream().map(Cidr::parse).toList())
			.transport(properties.getTransport())
			.eventLoopThreads(properties.getEventLoopThreads())
			.workerThreads(properties.getWorkerThreads())
			.defaultExport(properties.getDefaultExport());
		String bundle = properties.getSsl().getBundle();
		if (bundle != null && !bundle.isBlank()) {
			SslBundles bundles = sslBundles.getIfAvailable();
			if (bundles == null) {
				throw new IllegalStateException("nbd.server.ssl.bundle is set but no SslBundles are available");
			}
			builder.tls(new TlsSettings(new SslBundleTlsContext(bundles, bundle, properties.getSsl().getClientAuth()),
					properties.getSsl().getMode() == NbdServerProperties.Mode.REQUIRED));
		}
		customizers.orderedStream().forEach(c -> c.customize(builder));
		List<NbdServerListener> all = listeners.orderedStream().toList();
		return new NbdServer(builder.build(), backends, modes, allowLists, new CompositeListener(all));
	}

	@Bean
	@ConditionalOnMissingBean
	NbdServerLifecycle nbdServerLifecycle(NbdServer server, ApplicationEventPublisher publisher, Environment env) {
		Duration phaseTimeout = env.getProperty("spring.lifecycle.timeout-per-shutdown-phase", Duration.class,
				Duration.ofSeconds(30));
		// Leave the lifecycle processor a margin so the final flush is not cut short.
		Duration drain = phaseTimeout.minus(phaseTimeout.dividedBy(10));
		return new NbdServerLifecycle(server, publisher, drain);
	}

	private static int toIntBytes(long bytes, String property) {
		if (bytes < 4096 || bytes > Integer.MAX_VALUE) {
			throw new IllegalStateException(property + " must be between 4KB and 2GB, was " + bytes + " bytes");
		}
		return (int) bytes;
	}

	/** Fans server events out to every listener bean. */
	static final class CompositeListener implements NbdServerListener {

		private final NbdServerListener[] listeners;

		CompositeListener(List<NbdServerListener> listeners) {
			this.listeners = listeners.toArray(NbdServerListener[]::new);
		}

		@Override
		public void connectionOpened(dev.nbd.server.NbdConnection connection) {
			for (NbdServerListener l : this.listeners) {
				l.connectionOpened(connection);
			}
		}

		@Override
		public void connectionClosed(dev.nbd.server.NbdConnection connection) {
			for (NbdServerListener l : this.listeners) {
				l.connectionClosed(connection);
			}
		}

		@Override
		public void connectionRefused(String reason) {
			for (NbdServerListener l : this.listeners) {
				l.connectionRefused(reason);
			}
		}

		@Override
		public void requestCompleted(dev.nbd.server.Export export, String op, String outcome, long nanos, long bytes) {
			for (NbdServerListener l : this.listeners) {
				l.requestCompleted(export, op, outcome, nanos, bytes);
			}
		}

		@Override
		public void flushCompleted(dev.nbd.server.Export export, long nanos, boolean success) {
			for (NbdServerListener l : this.listeners) {
				l.flushCompleted(export, nanos, success);
			}
		}

	}

}
