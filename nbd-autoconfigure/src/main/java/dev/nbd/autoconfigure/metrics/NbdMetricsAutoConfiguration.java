package dev.nbd.autoconfigure.metrics;

import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.binder.netty4.NettyEventExecutorMetrics;

import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBooleanProperty;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.micrometer.metrics.autoconfigure.CompositeMeterRegistryAutoConfiguration;
import org.springframework.boot.micrometer.metrics.autoconfigure.MetricsAutoConfiguration;
import org.springframework.context.ApplicationListener;
import org.springframework.context.annotation.Bean;

import dev.nbd.autoconfigure.NbdServerAutoConfiguration;
import dev.nbd.autoconfigure.NbdServerInitializedEvent;

/**
 * NBD meters in the application's {@link MeterRegistry}. Runs before
 * {@link NbdServerAutoConfiguration} so the listener exists when the server is made; what needs
 * the running server (per-export gauges, Netty event loops) is bound once it has started.
 */
@AutoConfiguration(after = { MetricsAutoConfiguration.class, CompositeMeterRegistryAutoConfiguration.class },
		before = NbdServerAutoConfiguration.class)
@ConditionalOnClass({ MeterRegistry.class, NettyEventExecutorMetrics.class })
@ConditionalOnBean(MeterRegistry.class)
@ConditionalOnBooleanProperty(name = "nbd.server.enabled", matchIfMissing = true)
public final class NbdMetricsAutoConfiguration {

	@Bean
	@ConditionalOnMissingBean
	NbdMetrics nbdMetrics(MeterRegistry registry) {
		return new NbdMetrics(registry);
	}

	@Bean
	ServerStartedBinder nbdMetricsServerStartedBinder(NbdMetrics metrics) {
		return new ServerStartedBinder(metrics);
	}

	/** Binds the server's meters when the listener is up (on the thread that started it). */
	static final class ServerStartedBinder implements ApplicationListener<NbdServerInitializedEvent> {

		private final NbdMetrics metrics;

		ServerStartedBinder(NbdMetrics metrics) {
			this.metrics = metrics;
		}

		@Override
		public void onApplicationEvent(NbdServerInitializedEvent event) {
			this.metrics.bindServer(event.getServer());
		}

	}

}
