package dev.nbd.autoconfigure.metrics;

import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.FilteredClassLoader;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;

import dev.nbd.autoconfigure.NbdPortInfoApplicationContextInitializer;
import dev.nbd.autoconfigure.NbdServerAutoConfiguration;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

class NbdMetricsAutoConfigurationTests {

	/** For the servers this class starts itself (the others come from the context runner). */
	private final SimpleMeterRegistry registry = new SimpleMeterRegistry();

	private final NbdMetrics metrics = new NbdMetrics(this.registry);

	@RegisterExtension
	final NbdServerExtension servers = NbdServerExtension.alsoReportingTo(this.metrics);

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class,
				NbdMetricsAutoConfiguration.class))
		.withInitializer(new NbdPortInfoApplicationContextInitializer())
		.withPropertyValues("nbd.server.port=0", "nbd.exports.mem.type=memory", "nbd.exports.mem.size=1MB");

	@Test
	void serverReportsToTheRegistry() {
		this.runner.withBean(MeterRegistry.class, SimpleMeterRegistry::new).run((context) -> {
			assertThat(context).hasSingleBean(NbdMetrics.class);
			MeterRegistry registry = context.getBean(MeterRegistry.class);
			// Bound once the server started: per-export meters and Netty's.
			assertThat(registry.find("nbd.connections").tag("export", "mem").gauge()).isNotNull();
			assertThat(registry.find("nbd.flush").tag("export", "mem").timer()).isNotNull();
			assertThat(registry.find("netty.eventexecutor.workers").tag("group", "nbd-io").gauge()).isNotNull();
			assertThat(registry.find("netty.allocator.memory.used").gauges()).isNotEmpty();
			assertThat(registry.find("nbd.background.waiting").gauge()).isNotNull();
			int port = context.getBean(NbdServer.class).port();
			try (RawNbdClient client = RawNbdClient.connect(port, "mem")) {
				assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 512, new byte[512]).error()).isZero();
				client.disconnect();
			}
			// Meters are updated right after the reply is written.
			Awaitility.await()
				.untilAsserted(() -> assertThat(registry.get("nbd.requests")
					.tags("export", "mem", "op", "write", "outcome", "success")
					.timer()
					.count()).isEqualTo(1));
			assertThat(registry.get("nbd.bytes").tags("export", "mem", "direction", "written").counter().count())
				.isEqualTo(512);
		});
	}

	@Test
	void backsOffWithoutARegistry() {
		this.runner.run((context) -> assertThat(context).hasNotFailed().doesNotHaveBean(NbdMetrics.class));
	}

	@Test
	void backsOffWithoutMicrometer() {
		this.runner.withClassLoader(new FilteredClassLoader(MeterRegistry.class))
			.run((context) -> assertThat(context).hasNotFailed().doesNotHaveBean(NbdMetrics.class));
	}

	@Test
	void backsOffWhenTheServerIsDisabled() {
		this.runner.withBean(MeterRegistry.class, SimpleMeterRegistry::new)
			.withPropertyValues("nbd.server.enabled=false")
			.run((context) -> assertThat(context).doesNotHaveBean(NbdMetrics.class));
	}

	@Test
	void restartedServerGetsMetersForItsNewEventLoops() {
		NbdServer server = this.servers.start(dev.nbd.server.NbdServerConfig.builder().eventLoopThreads(2),
				new MemoryBackend("m", 4096));
		this.metrics.bindServer(server);
		assertThat(this.registry.find("netty.eventexecutor.tasks.pending").gauges()).hasSize(3);
		java.util.List<String> oldLoops = loopNames(this.registry);
		server.stop();
		server.start();
		this.metrics.bindServer(server);
		// Only the new loops (1 accept + 2 io), each still reporting.
		assertThat(this.registry.find("netty.eventexecutor.tasks.pending").gauges()).hasSize(3)
			.allSatisfy((g) -> assertThat(g.value()).isNotNaN());
		assertThat(loopNames(this.registry)).doesNotContainAnyElementsOf(oldLoops);
		assertThat(this.registry.find("netty.eventexecutor.workers").tag("group", "nbd-io").gauge().value())
			.isEqualTo(2);
		assertThat(this.registry.find("nbd.connections").tag("export", "m").gauges()).hasSize(1);
	}

	private static java.util.List<String> loopNames(MeterRegistry registry) {
		return registry.find("netty.eventexecutor.tasks.pending")
			.gauges()
			.stream()
			.map((g) -> g.getId().getTag("name"))
			.toList();
	}

	@Test
	void hotPathReusesMeters() {
		SimpleMeterRegistry registry = new SimpleMeterRegistry();
		NbdMetrics metrics = new NbdMetrics(registry);
		dev.nbd.server.Export export = new dev.nbd.server.Export(new MemoryBackend("m", 4096),
				dev.nbd.server.MultiConnMode.AUTO, java.util.List.of(), Runnable::run);
		metrics.requestCompleted(export, "read", "success", 1000, 512);
		int meters = registry.getMeters().size();
		for (int i = 0; i < 100; i++) {
			metrics.requestCompleted(export, "read", "success", 1000, 512);
			metrics.requestCompleted(export, "write", "eio", 1000, 0);
			metrics.flushCompleted(export, 1000, true);
		}
		// One new timer for (write, eio); nothing else registered per call.
		assertThat(registry.getMeters()).hasSize(meters + 1);
		assertThat(registry.get("nbd.requests").tags("op", "write", "outcome", "eio").timer().count()).isEqualTo(100);
		assertThat(registry.get("nbd.bytes").tag("direction", "read").counter().count()).isEqualTo(101 * 512);
		assertThat(registry.get("nbd.flush").timer().count()).isEqualTo(100);
	}

	@Test
	void fileExportsReportWhereTheirCallsRun(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
		SimpleMeterRegistry registry = new SimpleMeterRegistry();
		NbdMetrics metrics = new NbdMetrics(registry);
		try (dev.nbd.backend.FileBackend file = new dev.nbd.backend.FileBackend("f", dir.resolve("f.img"), 4096, null,
				false)) {
			dev.nbd.server.Export export = new dev.nbd.server.Export(file, dev.nbd.server.MultiConnMode.AUTO,
					java.util.List.of(), Runnable::run);
			metrics.requestCompleted(export, "read", "success", 1000, 512);
			assertThat(registry.get("nbd.file.io.fallbacks").tag("export", "f").functionCounter().count()).isZero();
			assertThat(registry.get("nbd.file.io.network.threads").tag("export", "f").gauge().value()).isOne();
		}
		// A memory export has no served file: no such meters.
		dev.nbd.server.Export mem = new dev.nbd.server.Export(new MemoryBackend("m", 4096),
				dev.nbd.server.MultiConnMode.AUTO, java.util.List.of(), Runnable::run);
		metrics.requestCompleted(mem, "read", "success", 1000, 512);
		assertThat(registry.find("nbd.file.io.fallbacks").tag("export", "m").functionCounter()).isNull();
	}

	@Test
	void backgroundWorkIsCountedPerExportAndOp() {
		SimpleMeterRegistry registry = new SimpleMeterRegistry();
		NbdMetrics metrics = new NbdMetrics(registry);
		dev.nbd.server.Export export = new dev.nbd.server.Export(new MemoryBackend("m", 4096),
				dev.nbd.server.MultiConnMode.AUTO, java.util.List.of(), Runnable::run);
		for (int i = 0; i < 3; i++) {
			metrics.backgroundChunk(export, "write_zeroes", 1 << 20);
		}
		metrics.backgroundChunk(export, "cache", 4096);
		assertThat(registry.get("nbd.background.bytes").tags("export", "m", "op", "write_zeroes").counter().count())
			.isEqualTo(3 << 20);
		assertThat(registry.get("nbd.background.chunks").tags("export", "m", "op", "write_zeroes").counter().count())
			.isEqualTo(3);
		assertThat(registry.get("nbd.background.chunks").tags("export", "m", "op", "cache").counter().count())
			.isEqualTo(1);
	}

}
