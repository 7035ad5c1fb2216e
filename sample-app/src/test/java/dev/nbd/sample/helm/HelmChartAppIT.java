package dev.nbd.sample.helm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.awaitility.Awaitility;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.sample.helm.HelmChart.Rendered;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.FreePort;
import dev.nbd.testsupport.Processes;
import dev.nbd.testsupport.TestPki;

import static dev.nbd.sample.helm.HelmChart.get;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * The packaged sample app started the way the chart starts it: with the application.yaml the
 * chart renders as additional config location. Then the chart's {@code helm test} script runs
 * against it with busybox, the same tools the test pod has.
 */
class HelmChartAppIT {

	@TempDir
	Path tmp;

	@Test
	void appServesTheRenderedConfigAndPassesTheHelmTestScript() throws Exception {
		Path busybox = ExternalTool.require("busybox");
		Path data = this.tmp.resolve("data");
		Rendered rendered = HelmChart.committed()
			.template("--set", "persistence.mountPath=" + data, "--set", "exports.chartcheck.type=file", "--set",
					"exports.chartcheck.path=chartcheck.img", "--set", "exports.chartcheck.size=1MB");
		Path config = this.tmp.resolve("application.yaml");
		Files.writeString(config, configYaml(rendered));
		int managementPort = FreePort.find();
		// Ports and address differ from the pod's: free loopback ports on a shared machine.
		try (SampleAppProcess app = SampleAppProcess.start(data, "--spring.config.additional-location=file:" + config,
				"--nbd.server.address=127.0.0.1", "--management.server.port=" + managementPort)) {
			ActuatorClient management = new ActuatorClient(managementPort);
			Awaitility.await()
				.atMost(Duration.ofMinutes(2))
				.pollInterval(Duration.ofMillis(200))
				.alias("readiness on the management port; app log:\n" + app.log())
				.until(() -> management.status("/actuator/health/readiness") == 200);
			// The export defined in values exists, on the data volume, with its size.
			Path image = data.resolve("chartcheck.img");
			assertThat(image).exists();
			assertThat(Files.size(image)).isEqualTo(1024 * 1024);
			// Probes and the scrape target are on the management port, not on server.port.
			assertThat(management.status("/actuator/health/liveness")).isEqualTo(200);
			assertThat(management.status("/actuator/prometheus")).isEqualTo(200);
			assertThat(new ActuatorClient(app.httpPort()).status("/actuator/health/readiness")).isEqualTo(404);

			Processes.Result hook = runHelmTestScript(busybox, rendered, "127.0.0.1", app.nbdPort(),
					management.uri("/actuator/health/readiness").toString());
			hook.assertSuccess();
			assertThat(hook.stdout()).contains("NBD server answers").contains("readiness UP");

			// And it fails when nothing listens on the NBD port.
			Processes.Result down = runHelmTestScript(busybox, rendered, "127.0.0.1", FreePort.find(),
					management.uri("/actuator/health/readiness").toString());
			assertThat(down.exitCode()).isNotZero();

			// SIGTERM drains and exits cleanly, well inside the pod's grace period.
			int grace = get(rendered.one("StatefulSet"), "spec.template.spec.terminationGracePeriodSeconds");
			assertThat(app.terminate(Duration.ofSeconds(grace))).isIn(0, 143);
		}
	}

	@Test
	void tlsSecretMappedOntoTheSslBundleServesNbdOverTls() throws Exception {
		Path nbdinfo = ExternalTool.require("nbdinfo");
		// What the Secret of ci/tls-values.yaml would hold: server certificate, key and client CA.
		Path secret = this.tmp.resolve("secret");
		Path client = this.tmp.resolve("client");
		issueCertificates(secret, client);
		Rendered rendered = HelmChart.committed()
			.template("-f", HelmChart.CHART.resolve("ci/tls-values.yaml").toString());
		// The pod mounts the Secret at /etc/nbd-server/tls; here it is a directory.
		Path config = this.tmp.resolve("application.yaml");
		Files.writeString(config, configYaml(rendered).replace("/etc/nbd-server/tls", secret.toString()));
		Path data = this.tmp.resolve("data");
		try (SampleAppProcess app = SampleAppProcess.start(data, "--spring.config.additional-location=file:" + config,
				"--nbd.server.address=127.0.0.1", "--management.server.port=" + FreePort.find())) {
			String uri = "nbds://127.0.0.1:" + app.nbdPort() + "/mem?tls-certificates=" + client;
			Processes.Result tls = Processes.run(Duration.ofSeconds(30), nbdinfo.toString(), uri);
			tls.assertSuccess();
			assertThat(tls.stdout()).contains("with TLS");
			// mode required: no plaintext, and clientAuth need: no TLS without a client certificate.
			assertThat(Processes.run(Duration.ofSeconds(30), nbdinfo.toString(), "nbd://127.0.0.1:" + app.nbdPort() + "/mem")
				.exitCode()).isNotZero();
			Path noClientCert = Files.createDirectories(this.tmp.resolve("ca-only"));
			Files.copy(client.resolve("ca-cert.pem"), noClientCert.resolve("ca-cert.pem"));
			assertThat(Processes.run(Duration.ofSeconds(30), nbdinfo.toString(),
					"nbds://127.0.0.1:" + app.nbdPort() + "/mem?tls-certificates=" + noClientCert).exitCode())
				.isNotZero();
		}
	}

	/** A CA, a server certificate for 127.0.0.1 (tls.crt/tls.key/ca.crt) and a client one (libnbd layout). */
	private static void issueCertificates(Path secret, Path client) throws IOException {
		TestPki pki = TestPki.create(secret.resolveSibling("pki"));
		Files.createDirectories(secret);
		Files.copy(pki.serverCert(), secret.resolve("tls.crt"));
		Files.copy(pki.serverKey(), secret.resolve("tls.key"));
		Files.copy(pki.caCert(), secret.resolve("ca.crt"));
		pki.clientDir(client, true);
	}

	/** The test Pod's script, run by busybox sh with busybox applets only, the pod's env pointed here. */
	private Processes.Result runHelmTestScript(Path busybox, Rendered rendered, String host, int port,
			String readinessUrl) throws IOException {
		Map<String, Object> container = get(rendered.one("Pod"), "spec.containers.0");
		String script = get(container, "args.0");
		Path bin = this.tmp.resolve("busybox-bin");
		if (!Files.isDirectory(bin)) {
			Files.createDirectories(bin);
			for (String applet : List.of("sh", "nc", "wget", "head", "grep", "echo")) {
				Files.createSymbolicLink(bin.resolve(applet), busybox);
			}
		}
		List<String> command = new ArrayList<>(List.of(busybox.toString(), "sh", "-c",
				"export PATH=" + bin + " NBD_HOST=" + host + " NBD_PORT=" + port + " READINESS_URL=" + readinessUrl
						+ "\n" + script));
		return Processes.run(Duration.ofSeconds(30), null, null, command);
	}

	@SuppressWarnings("unchecked")
	private static String configYaml(Rendered rendered) {
		Map<String, Object> configMap = rendered.named("ConfigMap", "rel-nbd-server");
		return ((Map<String, String>) configMap.get("data")).get("application.yaml");
	}

}
