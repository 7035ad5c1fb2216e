package dev.nbd.autoconfigure;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;

import dev.nbd.autoconfigure.metrics.NbdMetricsAutoConfiguration;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServer;
import dev.nbd.server.NbdServerException;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.Processes.Result;
import dev.nbd.testsupport.RecordingListener;
import dev.nbd.testsupport.TestPki;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.uring.IoUring;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

/**
 * {@code nbd.server.unix-socket}: libnbd ({@code nbd+unix:///EXPORT?socket=PATH}) and qemu on a
 * Unix domain socket, alongside TCP or instead of it, on every transport, with the file's
 * permissions, a stale socket replaced, TLS as on TCP.
 */
class UnixSocketInteropTests {

	private static final Duration TIMEOUT = Duration.ofSeconds(60);

	@TempDir
	Path dir;

	private ApplicationContextRunner runner(String... properties) {
		List<String> all = new ArrayList<>(List.of("nbd.exports.mem.type=memory", "nbd.exports.mem.size=64MB",
				"nbd.exports.disk.type=file", "nbd.exports.disk.size=64MB",
				"nbd.exports.disk.path=" + this.dir.resolve("disk.img")));
		all.addAll(List.of(properties));
		return new ApplicationContextRunner()
			.withConfiguration(AutoConfigurations.of(SslAutoConfiguration.class, NbdServerAutoConfiguration.class))
			.withBean(RecordingListener.class)
			.withPropertyValues(all.toArray(String[]::new));
	}

	@ParameterizedTest
	@ValueSource(strings = { "nio", "epoll", "io-uring" })
	void libnbdAndQemuOverTheSocketAlongsideTcp(String transport) {
		ExternalTool.require("nbdinfo");
		ExternalTool.require("nbdcopy");
		ExternalTool.require("qemu-img");
		assumeThat(transport.equals("nio") || (transport.equals("epoll") ? Epoll.isAvailable() : IoUring.isAvailable()))
			.as(transport + " available").isTrue();
		Path socket = this.dir.resolve("run/nbd.sock");
		runner("nbd.server.port=0", "nbd.server.transport=" + transport, "nbd.server.unix-socket=" + socket,
				"nbd.server.unix-socket-permissions=600").run((context) -> {
					NbdServer server = context.getBean(NbdServer.class);
					assertThat(server.port()).isPositive();
					assertThat(server.unixSocket()).isEqualTo(socket);
					assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(socket))).isEqualTo("rw-------");

					Result info = run("nbdinfo", "--json", unixUri("mem", socket));
					assertThat(info.stdout()).contains("\"export-size\": 67108864");
					// Same data whichever way a client comes in.
					Path source = this.dir.resolve("src.img");
					Files.write(source, "unix socket data".repeat(4096).getBytes());
					run("truncate", "-s", "64M", source.toString());
					run("nbdcopy", source.toString(), unixUri("disk", socket));
					run("qemu-img", "compare", "-f", "raw", "-F", "raw", source.toString(), unixUri("disk", socket));
					run("qemu-img", "compare", "-f", "raw", "-F", "raw", source.toString(),
							"nbd://127.0.0.1:" + server.port() + "/disk");
					Result qemu = run("qemu-img", "info", "--output=json", "--image-opts",
							"driver=nbd,server.type=unix,server.path=" + socket + ",export=mem");
					assertThat(qemu.stdout()).contains("\"virtual-size\": 67108864");

					List<NbdConnection> opened = context.getBean(RecordingListener.class).opened();
					assertThat(opened).extracting(NbdConnection::remote).contains("unix:" + socket);
					server.stop();
					// The listener's socket file goes with it.
					assertThat(socket).doesNotExist();
				});
	}

	@Test
	void onlyTheSocketWithPortMinusOneAndAStaleSocketFileIsReplaced() throws Exception {
		ExternalTool.require("nbdinfo");
		Path socket = this.dir.resolve("nbd.sock");
		// A server that died leaves its socket file behind.
		try (var stale = java.nio.channels.ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX)) {
			stale.bind(java.net.UnixDomainSocketAddress.of(socket));
		}
		assertThat(socket).exists();
		runner("nbd.server.port=-1", "nbd.server.unix-socket=" + socket).run((context) -> {
			NbdServer server = context.getBean(NbdServer.class);
			assertThat(server.port()).isEqualTo(-1);
			assertThat(server.isRunning()).isTrue();
			assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(socket))).isEqualTo("rw-rw----");
			assertThat(run("nbdinfo", "--size", unixUri("mem", socket)).stdout().trim()).isEqualTo("67108864");
			// A second server on the same live socket is refused, the first keeps serving.
			runner("nbd.server.port=-1", "nbd.server.unix-socket=" + socket).run((second) -> {
				assertThat(second).hasFailed();
				assertThat(second.getStartupFailure()).hasRootCauseInstanceOf(NbdServerException.class)
					.rootCause()
					.hasMessageContaining("already in use");
			});
			assertThat(run("nbdinfo", "--size", unixUri("mem", socket)).stdout().trim()).isEqualTo("67108864");
		});
	}

	@Test
	void theServersCidrListIsForTcpAndAnExportsListRefusesSocketClients() {
		ExternalTool.require("nbdinfo");
		Path socket = this.dir.resolve("acl.sock");
		runner("nbd.server.port=0", "nbd.server.unix-socket=" + socket, "nbd.server.allowed-addresses=10.9.0.0/16",
				"nbd.exports.disk.allowed-addresses=10.9.0.0/16").run((context) -> {
					int port = context.getBean(NbdServer.class).port();
					assertThat(Processes.run(TIMEOUT, "nbdinfo", "--size", "nbd://127.0.0.1:" + port + "/mem").exitCode())
						.isNotZero();
					assertThat(run("nbdinfo", "--size", unixUri("mem", socket)).stdout().trim()).isEqualTo("67108864");
					assertThat(Processes.run(TIMEOUT, "nbdinfo", "--size", unixUri("disk", socket)).exitCode())
						.isNotZero();
				});
	}

	@Test
	void metricsCountSocketClientsAsTcpOnes() {
		ExternalTool.require("nbdsh");
		Path socket = this.dir.resolve("metrics.sock");
		runner("nbd.server.port=-1", "nbd.server.unix-socket=" + socket)
			.withConfiguration(AutoConfigurations.of(NbdMetricsAutoConfiguration.class))
			.withInitializer(new NbdPortInfoApplicationContextInitializer())
			.withBean(MeterRegistry.class, SimpleMeterRegistry::new)
			.run((context) -> {
				run("nbdsh", "-u", unixUri("mem", socket), "-c", "h.pwrite(b'x' * 4096, 0)\nh.flush()");
				MeterRegistry registry = context.getBean(MeterRegistry.class);
				Awaitility.await()
					.untilAsserted(() -> assertThat(registry.get("nbd.requests")
						.tags("export", "mem", "op", "write", "outcome", "success")
						.timer()
						.count()).isEqualTo(1));
				assertThat(registry.get("nbd.bytes").tags("export", "mem", "direction", "written").counter().count())
					.isEqualTo(4096);
				assertThat(registry.get("nbd.flush").tags("export", "mem").timer().count()).isEqualTo(1);
			});
	}

	@Test
	void aPathThatIsNotASocketIsLeftAlone() throws IOException {
		Path file = this.dir.resolve("precious.txt");
		Files.writeString(file, "keep me");
		runner("nbd.server.port=-1", "nbd.server.unix-socket=" + file).run((context) -> {
			assertThat(context).hasFailed();
			assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("is not a socket");
		});
		assertThat(file).hasContent("keep me");
	}

	@Test
	void tlsOnTheSocketAsOnTcp() {
		ExternalTool.require("nbdinfo");
		ExternalTool.require("qemu-img");
		TestPki pki = TestPki.create(this.dir.resolve("pki"));
		Path certificates = pki.clientDir(this.dir.resolve("client"), true);
		Path socket = this.dir.resolve("tls.sock");
		List<String> properties = new ArrayList<>(pki.bundleProperties("nbd"));
		properties.addAll(List.of("nbd.server.port=-1", "nbd.server.unix-socket=" + socket,
				"nbd.server.ssl.bundle=nbd", "nbd.server.ssl.mode=required", "nbd.server.ssl.client-auth=need"));
		runner(properties.toArray(String[]::new)).run((context) -> {
			RecordingListener listener = context.getBean(RecordingListener.class);
			Result info = run("nbdinfo", "nbds+unix:///mem?socket=" + socket + "&tls-certificates=" + certificates);
			assertThat(info.stdout()).contains("export-size: 67108864");
			run("qemu-img", "info", "--object", "tls-creds-x509,id=tls0,dir=" + certificates + ",endpoint=client",
					"--image-opts", "driver=nbd,server.type=unix,server.path=" + socket
							+ ",export=mem,tls-creds=tls0,tls-hostname=localhost");
			assertThat(listener.opened()).hasSize(2).allSatisfy((c) -> {
				assertThat(c.tls()).isTrue();
				assertThat(c.tlsSubject()).isEqualTo(TestPki.CLIENT_SUBJECT);
			});
			// Plaintext on the socket is refused as on TCP.
			assertThat(Processes.run(TIMEOUT, "nbdinfo", unixUri("mem", socket)).exitCode()).isNotZero();
			assertThat(listener.awaitRefusals("tls_required", 1, Duration.ofSeconds(5))).isTrue();
		});
	}

	@Test
	void permissionsAreValidated() {
		assertThat(NbdServerConfigValidation.permissions("0640")).isEqualTo(PosixFilePermissions.fromString("rw-r-----"));
		assertThat(NbdServerConfigValidation.permissions("rw-rw-rw-")).isEqualTo(PosixFilePermissions.fromString("rw-rw-rw-"));
		runner("nbd.server.port=0", "nbd.server.unix-socket=" + this.dir.resolve("x.sock"),
				"nbd.server.unix-socket-permissions=rw-everyone").run((context) -> assertThat(context).hasFailed());
		// No TCP and no socket: nothing to listen on.
		runner("nbd.server.port=-1").run((context) -> assertThat(context.getStartupFailure()).rootCause()
			.hasMessageContaining("nbd.server.port is '-1', which turns TCP off, and nbd.server.unix-socket is not set"));
	}

	private static String unixUri(String export, Path socket) {
		return "nbd+unix:///" + export + "?socket=" + socket;
	}

	private static Result run(String... command) {
		return Processes.run(TIMEOUT, command).assertSuccess();
	}

}
