package dev.nbd.autoconfigure.actuate;

import java.nio.ByteBuffer;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.MemoryBackend;

/**
 * A tiny application for the observability tests: export {@code mem} (memory) and export
 * {@code slow}, whose reads wait until the test opens its {@link Gate}, so requests can be held
 * in flight.
 */
@SpringBootConfiguration(proxyBeanMethods = false)
@EnableAutoConfiguration
class ObservabilityTestApplication {

	/**
	 * Runs the application on its own, with the properties of {@link ObservabilityTest}, for
	 * tests that stop the server or disturb its counters (the context cached for the other
	 * classes must not see that).
	 */
	static ConfigurableApplicationContext startAlone() {
		return new SpringApplicationBuilder(ObservabilityTestApplication.class).registerShutdownHook(false)
			.properties("server.port=0", "nbd.server.port=0", "management.endpoints.web.exposure.include=health,nbd",
					"management.endpoint.health.probes.enabled=true",
					"management.endpoint.health.group.readiness.include=readinessState,nbd",
					"management.endpoint.health.group.readiness.show-components=always")
			.run();
	}

	static int httpPort(ConfigurableApplicationContext context) {
		return context.getEnvironment().getRequiredProperty("local.server.port", Integer.class);
	}

	static int nbdPort(ConfigurableApplicationContext context) {
		return context.getEnvironment().getRequiredProperty("local.nbd.server.port", Integer.class);
	}

	@Bean
	ExportBackend mem() {
		return new MemoryBackend("mem", 16 * 1024 * 1024);
	}

	@Bean
	Gate gate() {
		return new Gate();
	}

	@Bean
	ExportBackend slow(Gate gate) {
		return new ExportBackend() {

			@Override
			public String name() {
				return "slow";
			}

			@Override
			public long size() {
				return 1024 * 1024;
			}

			@Override
			public boolean isMultiConnSafe() {
				return true;
			}

			@Override
			public boolean canFlush() {
				return true;
			}

			@Override
			public void read(long offset, ByteBuffer dst) {
				gate.pass();
				dst.position(dst.limit());
			}

			@Override
			public void write(long offset, ByteBuffer src, boolean fua) {
				src.position(src.limit());
			}

		};
	}

	/** Holds {@code slow} reads until opened. Open by default. */
	static final class Gate {

		private volatile CountDownLatch latch = new CountDownLatch(0);

		void close() {
			this.latch = new CountDownLatch(1);
		}

		void open() {
			this.latch.countDown();
		}

		void pass() {
			try {
				if (!this.latch.await(30, TimeUnit.SECONDS)) {
					throw new IllegalStateException("gate never opened");
				}
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
			}
		}

	}

}
