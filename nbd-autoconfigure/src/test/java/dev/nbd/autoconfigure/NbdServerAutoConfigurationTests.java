package dev.nbd.autoconfigure;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.ByteBuffer;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.server.Export;
import dev.nbd.server.MultiConnMode;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerConfig;
import dev.nbd.server.NbdServerListener;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

class NbdServerAutoConfigurationTests {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class, SslAutoConfiguration.class))
		.withInitializer(new NbdPortInfoApplicationContextInitializer())
		.withPropertyValues("nbd.server.port=0");

	@Test
	void defaultsWithoutExports() {
		this.runner.run((context) -> {
			assertThat(context).hasSingleBean(NbdServer.class).hasSingleBean(NbdServerLifecycle.class);
			NbdServer server = context.getBean(NbdServer.class);
			NbdServerConfig config = server.config();
			assertThat(config.address()).isEqualTo("127.0.0.1");
			assertThat(config.maxPayload()).isEqualTo(32 * 1024 * 1024);
			assertThat(config.handshakeTimeout()).hasSeconds(10);
			assertThat(config.maxInFlight()).isEqualTo(64);
			assertThat(config.drainTimeout()).hasSeconds(30);
			assertThat(config.sendBufferSize()).isEqualTo(NbdServerConfig.ADAPTIVE_SEND_BUFFER);
			assertThat(config.sendBufferFor(java.net.InetAddress.getLoopbackAddress())).isEqualTo(512 * 1024);
			assertThat(config.sendBufferFor(java.net.InetAddress.getByAddress(new byte[] { 10, 1, 2, 3 }))).isZero();
			assertThat(config.busyPoll()).as("unset: adaptive").isNull();
			assertThat(config.tls()).isNull();
			assertThat(server.exports()).isEmpty();
			assertThat(server.isRunning()).isTrue();
		});
	}

	@Test
	void portZeroIsPublishedAsLocalPort() {
		this.runner.run((context) -> {
			int port = context.getBean(NbdServer.class).port();
			assertThat(port).isPositive();
			assertThat(context.getEnvironment().getProperty("local.nbd.server.port", Integer.class)).isEqualTo(port);
		});
	}

	@Test
	void exportsFromProperties(@TempDir Path dir) {
		this.runner
			.withPropertyValues("nbd.exports.mem.type=memory", "nbd.exports.mem.size=16MB",
					"nbd.exports.mem.description=test memory", "nbd.exports.disk.type=file",
					"nbd.exports.disk.path=" + dir.resolve("sub/disk.img"), "nbd.exports.disk.size=1MB",
					"nbd.exports.disk.read-only=false", "nbd.exports.ro.type=memory", "nbd.exports.ro.size=1MB",
					"nbd.exports.ro.read-only=true", "nbd.exports.ro.multi-conn=single")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				assertThat(server.exports()).extracting(Export::name).containsExactly("mem", "disk", "ro");
				assertThat(server.export("mem").backend()).isInstanceOf(MemoryBackend.class);
				assertThat(server.export("mem").size()).isEqualTo(16L * 1024 * 1024);
				assertThat(server.export("mem").description()).isEqualTo("test memory");
				assertThat(server.export("disk").backend()).isInstanceOf(FileBackend.class);
				assertThat(dir.resolve("sub/disk.img")).exists().hasSize(1024 * 1024);
				assertThat(server.export("ro").readOnly()).isTrue();
				assertThat(server.export("ro").multiConnMode()).isEqualTo(MultiConnMode.SINGLE);
			});
	}

	@Test
	void userExportBeansAreServedWithPropertyOptions() {
		this.runner.withUserConfiguration(UserExports.class)
			.withPropertyValues("nbd.exports.cached.multi-conn=emulate", "nbd.exports.cached.allowed-addresses=10.0.0.0/8")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				assertThat(server.exports()).extracting(Export::name).containsExactly("user", "cached");
				assertThat(server.export("user").multiConn()).isTrue();
				assertThat(server.export("cached").multiConn()).isTrue();
				assertThat(server.export("cached").multiConnMode()).isEqualTo(MultiConnMode.EMULATE);
				assertThat(server.export("cached").allowedAddresses()).hasSize(1);
			});
	}

	@Test
	void unsafeBackendIsNotAdvertisedAsMultiConnByDefault() {
		this.runner.withUserConfiguration(UserExports.class).run((context) -> {
			Export cached = context.getBean(NbdServer.class).export("cached");
			assertThat(cached.multiConn()).isFalse();
			assertThat(cached.transmissionFlags() & dev.nbd.protocol.NbdProtocol.TFLAG_CAN_MULTI_CONN).isZero();
		});
	}

	@Test
	void optionsForAnUnknownExportFailStartup() {
		this.runner.withPropertyValues("nbd.exports.ghost.multi-conn=emulate").run((context) -> {
			assertThat(context).hasFailed();
			assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("nbd.exports.ghost");
		});
	}

	@Test
	void memoryExportWithoutSizeFailsStartup() {
		this.runner.withPropertyValues("nbd.exports.mem.type=memory").run((context) -> {
			assertThat(context).hasFailed();
			assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("nbd.exports.mem.size");
		});
	}

	@Test
	void disabledFlagCreatesNothing() {
		this.runner.withPropertyValues("nbd.server.enabled=false").run((context) -> {
			assertThat(context).doesNotHaveBean(NbdServer.class).doesNotHaveBean(NbdServerLifecycle.class);
		});
	}

	@Test
	void propertiesReachTheServerConfig() {
		this.runner
			.withPropertyValues("nbd.server.max-connections=7", "nbd.server.max-in-flight=3",
					"nbd.server.max-payload=1MB", "nbd.server.handshake-timeout=2s",
					"nbd.server.allowed-addresses=127.0.0.0/8,::1", "nbd.server.transport=nio",
					"nbd.server.send-buffer-size=0", "nbd.server.busy-poll=50us", "nbd.server.drain-timeout=3s")
			.run((context) -> {
				NbdServerConfig config = context.getBean(NbdServer.class).config();
				assertThat(config.maxConnections()).isEqualTo(7);
				assertThat(config.maxInFlight()).isEqualTo(3);
				assertThat(config.maxPayload()).isEqualTo(1024 * 1024);
				assertThat(config.handshakeTimeout()).hasSeconds(2);
				assertThat(config.allowedAddresses()).hasSize(2);
				assertThat(config.sendBufferSize()).isZero();
				assertThat(config.sendBufferFor(java.net.InetAddress.getLoopbackAddress())).isZero();
				assertThat(config.drainTimeout()).hasSeconds(3);
				assertThat(config.busyPoll()).isEqualTo(java.time.Duration.ofNanos(50_000));
				assertThat(context.getBean(NbdServer.class).transport()).isEqualTo(dev.nbd.server.Transport.NIO);
			});
	}

	@Test
	void everyServerPropertyReachesTheServer() {
		this.runner
			.withPropertyValues("nbd.server.address=127.0.0.2", "nbd.server.max-payload=1MB", "nbd.server.max-in-flight-bytes=3MB",
					"nbd.server.idle-timeout=7m", "nbd.server.write-stall-timeout=45s", "nbd.server.event-loop-threads=3",
					"nbd.server.worker-threads=5", "nbd.server.default-export=two", "nbd.server.send-buffer-size=256KB",
					"nbd.exports.one.type=memory", "nbd.exports.one.size=1MB", "nbd.exports.two.type=memory",
					"nbd.exports.two.size=2MB")
			.run((context) -> {
				NbdServer server = context.getBean(NbdServer.class);
				NbdServerConfig config = server.config();
				assertThat(config.address()).isEqualTo("127.0.0.2");
				assertThat(config.maxInFlightBytes()).isEqualTo(3L * 1024 * 1024);
				assertThat(config.idleTimeout()).hasMinutes(7);
				assertThat(config.writeStallTimeout()).hasSeconds(45);
				assertThat(config.eventLoopThreads()).isEqualTo(3);
				assertThat(config.workerThreads()).isEqualTo(5);
				assertThat(config.defaultExport()).isEqualTo("two");
				assertThat(config.sendBufferSize()).isEqualTo(256 * 1024);
				// Listening where asked.
				try (java.net.Socket socket = new java.net.Socket("127.0.0.2", server.port())) {
					socket.setSoTimeout(10_000);
					assertThat(new java.io.DataInputStream(socket.getInputStream()).readLong())
						.isEqualTo(NbdProtocol.NBDMAGIC);
				}
				catch (IOException ex) {
					throw new java.io.UncheckedIOException(ex);
				}
				assertThat(server.isRunning()).isTrue();
			});
	}

	@Test
	void aPerExportAllowListAdmitsTheAddressesItNames() {
		this.runner
			.withPropertyValues("nbd.exports.open.type=memory", "nbd.exports.open.size=1MB",
					"nbd.exports.open.allowed-addresses=127.0.0.1/32,::1", "nbd.exports.shut.type=memory",
					"nbd.exports.shut.size=1MB", "nbd.exports.shut.allowed-addresses=192.0.2.0/24")
			.run((context) -> {
				int port = context.getBean(NbdServer.class).port();
				try (RawNbdClient client = RawNbdClient.connect(port, "open")) {
					assertThat(client.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
				}
				try (RawNbdClient client = RawNbdClient.connect(port)) {
					client.handshake();
					assertThat(client.request(NbdProtocol.OPT_GO, RawNbdClient.goData("shut")).type())
						.isEqualTo(NbdProtocol.REP_ERR_POLICY);
				}
			});
	}

	@Test
	void customizersAndListenersAreApplied() {
		this.runner.withUserConfiguration(Customized.class).run((context) -> {
			assertThat(context.getBean(NbdServer.class).config().maxInFlight()).isEqualTo(5);
		});
	}

	@Test
	void userServerBeanReplacesOurs() {
		this.runner.withUserConfiguration(OwnServer.class).run((context) -> {
			assertThat(context).hasSingleBean(NbdServer.class);
			assertThat(context.getBean(NbdServer.class)).isSameAs(context.getBean(OwnServer.class).server);
		});
	}

	@Test
	void portInUseFailsWithAClearMessage() throws IOException {
		try (ServerSocket taken = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
			this.runner.withPropertyValues("nbd.server.port=" + taken.getLocalPort()).run((context) -> {
				assertThat(context).hasFailed();
				assertThat(context.getStartupFailure()).hasStackTraceContaining("already in use");
				assertThat(new NbdPortInUseFailureAnalyzer().analyze(context.getStartupFailure()).getAction())
					.contains("nbd.server.port");
			});
		}
	}

	@Configuration(proxyBeanMethods = false)
	static class UserExports {

		@Bean
		ExportBackend user() {
			return new MemoryBackend("user", 1024 * 1024);
		}

		@Bean
		ExportBackend cached() {
			return new ExportBackend() {
				@Override
				public String name() {
					return "cached";
				}

				@Override
				public long size() {
					return 4096;
				}

				@Override
				public void read(long offset, ByteBuffer dst) {
					dst.position(dst.limit());
				}

				@Override
				public void write(long offset, ByteBuffer src, boolean fua) {
					src.position(src.limit());
				}
			};
		}

	}

	@Configuration(proxyBeanMethods = false)
	static class Customized {

		@Bean
		NbdServerCustomizer inFlight() {
			return (builder) -> builder.maxInFlight(5);
		}

		@Bean
		NbdServerListener listener() {
			return new NbdServerListener() {
			};
		}

	}

	@Configuration(proxyBeanMethods = false)
	static class OwnServer {

		final NbdServer server = new NbdServer(NbdServerConfig.builder().port(0).build(), java.util.List.of(),
				java.util.Map.of(), java.util.Map.of(), null);

		@Bean
		NbdServer nbdServer() {
			return this.server;
		}

	}

}
