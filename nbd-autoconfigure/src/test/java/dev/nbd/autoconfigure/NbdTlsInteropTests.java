package dev.nbd.autoconfigure;

import java.math.BigInteger;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.autoconfigure.ssl.SslAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.autoconfigure.actuate.NbdEndpoint;
import dev.nbd.server.NbdConnection;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.Processes.Result;
import dev.nbd.testsupport.RawNbdClient;
import dev.nbd.testsupport.RecordingListener;
import dev.nbd.testsupport.TestPki;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * TLS from a Spring Boot SSL bundle against real clients: libnbd's {@code nbdinfo}/{@code nbdsh}
 * ({@code nbds://…?tls-certificates=DIR}) and qemu's {@code tls-creds-x509}, with certificates
 * made by the {@code openssl} CLI.
 */
@ExtendWith(OutputCaptureExtension.class)
class NbdTlsInteropTests {

	private static final Duration TIMEOUT = Duration.ofSeconds(60);

	@TempDir
	static Path dir;

	static TestPki pki;

	static Path withCert;

	static Path withoutCert;

	static Path untrustedClient;

	@BeforeAll
	static void pki() {
		pki = TestPki.create(dir.resolve("pki"));
		withCert = pki.clientDir(dir.resolve("client"), true);
		withoutCert = pki.clientDir(dir.resolve("anonymous"), false);
		// Our CA to check the server, a certificate and key issued by another CA to present.
		TestPki other = TestPki.create(dir.resolve("other-pki"));
		untrustedClient = pki.clientDir(dir.resolve("untrusted"), false);
		try {
			java.nio.file.Files.copy(other.clientCert(), untrustedClient.resolve("client-cert.pem"));
			java.nio.file.Files.copy(other.clientKey(), untrustedClient.resolve("client-key.pem"));
		}
		catch (java.io.IOException ex) {
			throw new java.io.UncheckedIOException(ex);
		}
	}

	private ApplicationContextRunner runner(String... properties) {
		List<String> all = new ArrayList<>(pki.bundleProperties("nbd"));
		all.addAll(List.of("nbd.server.port=0", "nbd.server.ssl.bundle=nbd", "nbd.exports.mem.type=memory",
				"nbd.exports.mem.size=16MB"));
		all.addAll(List.of(properties));
		return new ApplicationContextRunner()
			.withConfiguration(AutoConfigurations.of(SslAutoConfiguration.class, NbdServerAutoConfiguration.class))
			.withBean(RecordingListener.class)
			.withPropertyValues(all.toArray(String[]::new));
	}

	@Test
	void requiredModeWithClientCertificatesServesLibnbdAndQemu() {
		ExternalTool.require("nbdinfo");
		ExternalTool.require("nbdsh");
		ExternalTool.require("qemu-img");
		runner("nbd.server.ssl.mode=required", "nbd.server.ssl.client-auth=need").run((context) -> {
			int port = context.getBean(NbdServer.class).port();
			RecordingListener listener = context.getBean(RecordingListener.class);

			Result info = Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, withCert)).assertSuccess();
			assertThat(info.stdout()).contains("export-size: 16777216");

			// nbdsh -u refuses URIs that read local files; a script may allow it.
			Processes.run(TIMEOUT, "nbdsh", "-c", "h.set_uri_allow_local_file(True)\nh.connect_uri('"
					+ tlsUri(port, withCert) + "')\nh.pwrite(b'tls!' * 128, 4096)\n"
					+ "assert h.pread(512, 4096) == b'tls!' * 128\nassert h.get_tls_negotiated()\n")
				.assertSuccess();

			Result qemu = Processes.run(TIMEOUT, "qemu-img", "info", "--object",
					"tls-creds-x509,id=tls0,dir=" + withCert + ",endpoint=client", "--image-opts",
					"driver=nbd,host=127.0.0.1,port=" + port + ",export=mem,tls-creds=tls0");
			qemu.assertSuccess();
			assertThat(qemu.stdout()).contains("virtual size: 16 MiB");

			// The actuator endpoint shows a live connection's certificate subject.
			Process held = Processes
				.builder(List.of("nbdsh", "-c", "import sys\nh.set_uri_allow_local_file(True)\nh.connect_uri('" + tlsUri(port, withCert)
						+ "')\nprint('ready', flush=True)\nsys.stdin.read()\n"))
				.redirectError(ProcessBuilder.Redirect.INHERIT)
				.start();
			try {
				java.io.BufferedReader out = new java.io.BufferedReader(
						new java.io.InputStreamReader(held.getInputStream(), java.nio.charset.StandardCharsets.UTF_8));
				assertThat(out.readLine()).isEqualTo("ready");
				NbdServer server = context.getBean(NbdServer.class);
				await().atMost(TIMEOUT).until(() -> !server.connections().isEmpty());
				assertThat(new NbdEndpoint(server).nbd().connections()).anySatisfy((c) -> {
					assertThat(c.tls()).isTrue();
					assertThat(c.tlsSubject()).isEqualTo(TestPki.CLIENT_SUBJECT);
				});
			}
			finally {
				held.getOutputStream().close();
				if (!held.waitFor(60, java.util.concurrent.TimeUnit.SECONDS)) {
					held.destroyForcibly();
				}
			}

			// Every client that got in did so over TLS, with the client certificate's subject known.
			assertThat(listener.opened()).hasSizeGreaterThanOrEqualTo(3).allSatisfy((c) -> {
				assertThat(c.tls()).isTrue();
				assertThat(c.tlsSubject()).isEqualTo(TestPki.CLIENT_SUBJECT);
			});

			// Plaintext: every option but STARTTLS is refused with TLS_REQD, libnbd gives up.
			Result plain = Processes.run(TIMEOUT, "nbdinfo", "nbd://127.0.0.1:" + port + "/mem");
			assertThat(plain.exitCode()).isNotZero();
			assertThat(listener.awaitRefusals("tls_required", 1, Duration.ofSeconds(5))).isTrue();

			// A client without a certificate fails the TLS handshake under client-auth=need.
			Result anonymous = Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, withoutCert));
			assertThat(anonymous.exitCode()).isNotZero();
			assertThat(listener.awaitRefusals("tls_handshake", 1, Duration.ofSeconds(5))).isTrue();

			// A client certificate from a CA the server does not trust fails the same way, and
			// attaches nothing (the client itself trusts the server's CA).
			int openedBefore = listener.opened().size();
			Result untrusted = Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, untrustedClient));
			assertThat(untrusted.exitCode()).isNotZero();
			assertThat(listener.awaitRefusals("tls_handshake", 2, Duration.ofSeconds(30))).isTrue();
			assertThat(listener.opened()).hasSize(openedBefore);

			// qemu in plaintext against a FORCEDTLS server is refused too.
			Result qemuPlain = Processes.run(TIMEOUT, "qemu-img", "info", "--image-opts",
					"driver=nbd,host=127.0.0.1,port=" + port + ",export=mem");
			assertThat(qemuPlain.exitCode()).isNotZero();
			assertThat(listener.opened()).allSatisfy((c) -> assertThat(c.tls()).isTrue());
		});
	}

	@Test
	void optionalModeServesPlaintextAndTlsClients() {
		ExternalTool.require("nbdinfo");
		ExternalTool.require("qemu-img");
		runner("nbd.server.ssl.mode=optional", "nbd.server.ssl.client-auth=want").run((context) -> {
			int port = context.getBean(NbdServer.class).port();
			RecordingListener listener = context.getBean(RecordingListener.class);
			Processes.run(TIMEOUT, "nbdinfo", "nbd://127.0.0.1:" + port + "/mem").assertSuccess();
			Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, withCert)).assertSuccess();
			Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, withoutCert)).assertSuccess();
			Processes.run(TIMEOUT, "qemu-img", "info", "--object",
					"tls-creds-x509,id=tls0,dir=" + withCert + ",endpoint=client", "--image-opts",
					"driver=nbd,host=127.0.0.1,port=" + port + ",export=mem,tls-creds=tls0")
				.assertSuccess();
			List<NbdConnection> opened = listener.opened();
			assertThat(opened).hasSize(4);
			assertThat(opened.get(0).tls()).isFalse();
			assertThat(opened.get(1).tls()).isTrue();
			assertThat(opened.get(1).tlsSubject()).isEqualTo(TestPki.CLIENT_SUBJECT);
			// "want": no certificate is fine, and then there is no subject.
			assertThat(opened.get(2).tls()).isTrue();
			assertThat(opened.get(2).tlsSubject()).isNull();
			assertThat(opened.get(3).tlsSubject()).isEqualTo(TestPki.CLIENT_SUBJECT);
			assertThat(listener.refusals()).isEmpty();
		});
	}

	@Test
	void rotatedCertificateAppliesToNewConnectionsWithoutRestart(@TempDir Path rotating, CapturedOutput output)
			throws Exception {
		ExternalTool.require("nbdinfo");
		TestPki own = TestPki.create(rotating);
		Path client = own.clientDir(rotating.resolve("client"), true);
		List<String> properties = new ArrayList<>(own.bundleProperties("nbd"));
		properties.addAll(List.of("spring.ssl.bundle.pem.nbd.reload-on-update=true",
				"spring.ssl.bundle.watch.file.quiet-period=100ms"));
		runner(properties.toArray(String[]::new)).run((context) -> {
				int port = context.getBean(NbdServer.class).port();
				BigInteger before;
				try (RawNbdClient held = RawNbdClient.connect(port)) {
					held.handshake();
					before = held.startTls().getSerialNumber();
					held.go("mem");

					own.issue("server", "/O=nbd-tests/OU=rotated/CN=localhost", "serverAuth",
							"subjectAltName=DNS:localhost,IP:127.0.0.1");
					BigInteger after = awaitNewSerial(port, before);
					assertThat(after).as("certificate served after rotation").isNotEqualTo(before);

					// A broken file (a rotation caught half-way) keeps the last good certificate
					// and does not stop later rotations from being picked up.
					java.nio.file.Files.writeString(own.serverCert(), "not a certificate");
					// Only once the server has seen the broken file does "still the old certificate" mean
					// anything: wait for its refusal to use it.
					await().atMost(Duration.ofSeconds(30))
						.until(() -> output.toString().contains("SSL bundle 'nbd' changed but cannot be used"));
					try (RawNbdClient fresh = RawNbdClient.connect(port)) {
						fresh.handshake();
						assertThat(fresh.startTls().getSerialNumber()).isEqualTo(after);
					}
					own.issue("server", "/O=nbd-tests/OU=rotated-again/CN=localhost", "serverAuth",
							"subjectAltName=DNS:localhost,IP:127.0.0.1");
					BigInteger third = awaitNewSerial(port, after);
					assertThat(third).as("certificate served after the second rotation").isNotEqualTo(after);
					// Real clients accept the new certificate (same CA, same names).
					Processes.run(TIMEOUT, "nbdinfo", tlsUri(port, client)).assertSuccess();
					// The connection opened before the rotation still works.
					held.sendRequest(0, dev.nbd.protocol.NbdProtocol.CMD_READ, 7, 0, 512, null);
					assertThat(held.readSimpleReply().error()).isZero();
				}
			});
	}

	/** The serial of the certificate new connections get, once it is no longer {@code current} (up to 20 s). */
	private static BigInteger awaitNewSerial(int port, BigInteger current) {
		return await().atMost(Duration.ofSeconds(20))
			.pollDelay(Duration.ofMillis(100))
			.pollInterval(Duration.ofMillis(100))
			.until(() -> servedSerial(port), (serial) -> !serial.equals(current));
	}

	private static BigInteger servedSerial(int port) throws Exception {
		try (RawNbdClient fresh = RawNbdClient.connect(port)) {
			fresh.handshake();
			return fresh.startTls().getSerialNumber();
		}
	}

	private static String tlsUri(int port, Path certificates) {
		return "nbds://127.0.0.1:" + port + "/mem?tls-certificates=" + certificates;
	}

}
