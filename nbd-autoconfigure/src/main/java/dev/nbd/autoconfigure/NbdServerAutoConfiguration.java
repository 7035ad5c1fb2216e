package dev.nbd.autoconfigure;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

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
import dev.nbd.server.ExportPolicy;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;
import dev.nbd.server.NbdServerListener;

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
		List<ExportBackend> beans = exportBeans.orderedStream().toList();
		List<ExportBackend> backends = new ArrayList<>(propertyExports.backends());
		backends.addAll(beans);
		NbdServerConfig.Builder builder = NbdServerConfigValidation.builder(properties, sslBundles);
		customizers.orderedStream().forEach(c -> c.customize(builder));
		NbdServerConfig config = NbdServerConfigValidation.build(builder);
		Map<String, ExportPolicy> policies = ExportPolicies.resolve(exportProperties, beans, config.maxPayload());
		NbdServerConfigValidation.checkDefaultExport(config, backends);
		if (backends.isEmpty()) {
			logger.warn("NBD server has no exports: declare nbd.exports.* or ExportBackend beans");
		}
		List<NbdServerListener> all = listeners.orderedStream().toList();
		try {
			return new NbdServer(config, backends, policies, new CompositeListener(all));
		}
		catch (IllegalArgumentException ex) {
			// What the properties could not catch: a bean's own declarations (name, block sizes).
			throw new NbdConfigurationException("An export cannot be served: " + ex.getMessage() + ".",
					"Fix the ExportBackend bean's declarations (name(), minimumBlockSize(), preferredBlockSize()),"
							+ " or override its block sizes with nbd.exports.<name>.minimum-block-size and"
							+ " nbd.exports.<name>.preferred-block-size.",
					ex);
		}
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
