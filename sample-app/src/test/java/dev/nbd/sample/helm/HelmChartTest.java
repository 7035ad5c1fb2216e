package dev.nbd.sample.helm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.Yaml;
import org.yaml.snakeyaml.constructor.SafeConstructor;

import dev.nbd.sample.helm.HelmChart.Rendered;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

import static dev.nbd.sample.helm.HelmChart.get;
import static org.assertj.core.api.Assertions.assertThat;

/**
 * What a reviewer checks in {@code helm template} output: the workload and its volume, ports,
 * probes, security context, TLS and config wiring, and monitoring objects exactly when enabled.
 */
class HelmChartTest {

	/** Simulates a cluster running the Prometheus Operator. */
	private static final String OPERATOR = "--api-versions=monitoring.coreos.com/v1";

	@TempDir
	Path tmp;

	static Stream<Path> ciValues() {
		return HelmChart.ciValues().stream();
	}

	@Test
	void ciValuesCoverTheCombinationsThatMatter() {
		assertThat(HelmChart.ciValues()).map((p) -> p.getFileName().toString())
			.contains("default-values.yaml", "monitoring-values.yaml", "tls-values.yaml", "ephemeral-values.yaml",
					"networkpolicy-values.yaml", "unix-socket-values.yaml");
	}

	@Test
	void lintStrictWithDefaults() {
		HelmChart.committed().lint().assertSuccess();
	}

	@ParameterizedTest
	@MethodSource("ciValues")
	void lintStrictAndTemplateEveryCiValuesFile(Path values) {
		HelmChart chart = HelmChart.withDashboard(this.tmp);
		chart.lint("-f", values.toString()).assertSuccess();
		for (String[] extra : new String[][] { {}, { OPERATOR } }) {
			Rendered rendered = chart.template(concat(new String[] { "-f", values.toString() }, extra));
			assertThat(rendered.kinds()).contains("StatefulSet", "Service", "ConfigMap");
			for (Map<String, Object> o : rendered.objects()) {
				assertThat((String) get(o, "apiVersion")).isNotBlank();
				assertThat((String) get(o, "metadata.name")).isNotBlank().hasSizeLessThanOrEqualTo(63);
				assertThat((String) get(o, "metadata.namespace")).isEqualTo("storage");
			}
			assertThat(appConfig(rendered)).isNotNull();
		}
	}

	@Test
	void statefulSetHasOneVolumePerReplicaMountedWhereFileExportsLive() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> sts = r.one("StatefulSet");
		assertThat((String) get(sts, "spec.serviceName")).isEqualTo("rel-nbd-server-headless");
		List<Map<String, Object>> claims = get(sts, "spec.volumeClaimTemplates");
		assertThat(claims).hasSize(1);
		assertThat((String) get(claims.get(0), "metadata.name")).isEqualTo("data");
		assertThat((List<String>) get(claims.get(0), "spec.accessModes")).containsExactly("ReadWriteOnce");
		assertThat((String) get(claims.get(0), "spec.resources.requests.storage")).isEqualTo("10Gi");
		Map<String, Object> container = container(sts);
		assertThat(mount(container, "data")).containsEntry("mountPath", "/data");
		// The disk export's relative path lands on the volume.
		assertThat((String) get(appConfig(r), "nbd.exports.disk.path")).isEqualTo("/data/disk.img");
		assertThat((String) get(appConfig(r), "nbd.exports.disk.type")).isEqualTo("file");
		assertThat((String) get(appConfig(r), "nbd.exports.mem.type")).isEqualTo("memory");
		// Listen on the pod network, not loopback.
		assertThat((String) get(appConfig(r), "nbd.server.address")).isEqualTo("0.0.0.0");
	}

	@Test
	void persistenceOffUsesAnEmptyDirAndNoClaims() {
		Rendered r = HelmChart.committed().template("-f", ci("ephemeral"));
		Map<String, Object> sts = r.one("StatefulSet");
		assertThat((Object) get(sts, "spec.volumeClaimTemplates")).isNull();
		assertThat((Object) get(sts, "spec.persistentVolumeClaimRetentionPolicy")).isNull();
		assertThat(volume(sts, "data")).containsEntry("emptyDir", Map.of("sizeLimit", "4Gi"));
		assertThat((Map<String, Object>) get(appConfig(r), "nbd.exports")).containsOnlyKeys("disk");
		assertThat((String) get(appConfig(r), "nbd.exports.disk.path")).isEqualTo("/data/scratch.img");
	}

	@Test
	void nbdAndManagementPortsAreSeparate() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> container = container(r.one("StatefulSet"));
		List<Map<String, Object>> ports = get(container, "ports");
		assertThat(ports).extracting((p) -> p.get("name") + "=" + p.get("containerPort"))
			.containsExactly("nbd=10809", "http-mgmt=8081");
		Map<String, Object> config = appConfig(r);
		assertThat((Integer) get(config, "nbd.server.port")).isEqualTo(10809);
		assertThat((Integer) get(config, "management.server.port")).isEqualTo(8081);
		assertThat((String) get(config, "management.endpoints.web.exposure.include")).contains("health", "prometheus");
		// The client Service carries NBD only; the headless one gives per-pod names for both.
		Map<String, Object> service = r.named("Service", "rel-nbd-server");
		assertThat((List<Map<String, Object>>) get(service, "spec.ports")).extracting((p) -> p.get("port"))
			.containsExactly(10809);
		Map<String, Object> headless = r.named("Service", "rel-nbd-server-headless");
		assertThat((String) get(headless, "spec.clusterIP")).isEqualTo("None");
		assertThat((List<Map<String, Object>>) get(headless, "spec.ports")).extracting((p) -> p.get("port"))
			.containsExactly(10809, 8081);
		// Both select the StatefulSet's pods.
		Map<String, Object> podLabels = get(r.one("StatefulSet"), "spec.template.metadata.labels");
		assertThat(podLabels).containsAllEntriesOf(get(service, "spec.selector"))
			.containsAllEntriesOf(get(headless, "spec.selector"));
	}

	@Test
	void probesUseTheActuatorGroupsOnTheManagementPort() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> container = container(r.one("StatefulSet"));
		assertThat((String) get(container, "livenessProbe.httpGet.path")).isEqualTo("/actuator/health/liveness");
		assertThat((String) get(container, "readinessProbe.httpGet.path")).isEqualTo("/actuator/health/readiness");
		assertThat((String) get(container, "startupProbe.httpGet.path")).isEqualTo("/actuator/health/liveness");
		for (String probe : List.of("livenessProbe", "readinessProbe", "startupProbe")) {
			assertThat((String) get(container, probe + ".httpGet.port")).isEqualTo("http-mgmt");
		}
		Map<String, Object> config = appConfig(r);
		assertThat((Boolean) get(config, "management.endpoint.health.probes.enabled")).isTrue();
		// Readiness follows the NBD listener, not just the web server.
		assertThat((String) get(config, "management.endpoint.health.group.readiness.include")).contains("nbd");
	}

	@Test
	void gracePeriodCoversPreStopAndTheDrain() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> sts = r.one("StatefulSet");
		int grace = get(sts, "spec.template.spec.terminationGracePeriodSeconds");
		int preStop = get(container(sts), "lifecycle.preStop.sleep.seconds");
		String phase = get(appConfig(r), "spring.lifecycle.timeout-per-shutdown-phase");
		assertThat(phase).isEqualTo("30s");
		assertThat(grace).isGreaterThan(preStop + 30);
		assertThat((String) get(appConfig(r), "server.shutdown")).isEqualTo("graceful");

		Rendered longer = HelmChart.committed().template("--set", "shutdown.timeoutSeconds=120");
		int longerGrace = get(longer.one("StatefulSet"), "spec.template.spec.terminationGracePeriodSeconds");
		assertThat(longerGrace).isGreaterThan(preStop + 120);
		assertThat((String) get(appConfig(longer), "spring.lifecycle.timeout-per-shutdown-phase")).isEqualTo("120s");

		Rendered fixed = HelmChart.committed().template("--set", "terminationGracePeriodSeconds=300");
		assertThat((Integer) get(fixed.one("StatefulSet"), "spec.template.spec.terminationGracePeriodSeconds"))
			.isEqualTo(300);
	}

	@Test
	void runsNonRootWithReadOnlyRootAndNoCapabilities() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> sts = r.one("StatefulSet");
		Map<String, Object> pod = get(sts, "spec.template.spec.securityContext");
		assertThat(pod).containsEntry("runAsNonRoot", true).containsEntry("fsGroup", 1000);
		assertThat((String) get(pod, "seccompProfile.type")).isEqualTo("RuntimeDefault");
		Map<String, Object> container = get(container(sts), "securityContext");
		assertThat(container).containsEntry("runAsNonRoot", true)
			.containsEntry("readOnlyRootFilesystem", true)
			.containsEntry("allowPrivilegeEscalation", false);
		assertThat((List<String>) get(container, "capabilities.drop")).containsExactly("ALL");
		assertThat((Object) get(container, "capabilities.add")).isNull();
		assertThat((String) get(container, "seccompProfile.type")).isEqualTo("RuntimeDefault");
		// The JVM and Tomcat need a writable /tmp.
		assertThat(mount(container(sts), "tmp")).containsEntry("mountPath", "/tmp");
		assertThat(volume(sts, "tmp")).containsKey("emptyDir");
		assertThat((Boolean) get(sts, "spec.template.spec.automountServiceAccountToken")).isFalse();
		assertThat((Map<String, Object>) get(container(sts), "resources.requests")).containsKeys("cpu", "memory");
		assertThat((Map<String, Object>) get(container(sts), "resources.limits")).containsKey("memory");
	}

	@Test
	void configReachesTheAppThroughAnAdditionalLocationAndRollsThePods() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> sts = r.one("StatefulSet");
		Map<String, Object> container = container(sts);
		assertThat(env(container, "SPRING_CONFIG_ADDITIONAL_LOCATION"))
			.isEqualTo("file:/etc/nbd-server/config/application.yaml");
		assertThat(mount(container, "config")).containsEntry("mountPath", "/etc/nbd-server/config");
		assertThat((String) get(volume(sts, "config"), "configMap.name")).isEqualTo("rel-nbd-server");
		String checksum = get(sts, "spec.template.metadata.annotations.checksum/config");
		Rendered changed = HelmChart.committed().template("--set", "nbd.maxConnections=9");
		assertThat((String) get(changed.one("StatefulSet"), "spec.template.metadata.annotations.checksum/config"))
			.isNotEqualTo(checksum);
		assertThat((Integer) get(appConfig(changed), "nbd.server.max-connections")).isEqualTo(9);
		// Free-form config is merged over the rendered one, not appended as a second document.
		Rendered merged = HelmChart.committed().template("--set", "config.nbd.server.idle-timeout=5m");
		assertThat((String) get(appConfig(merged), "nbd.server.idle-timeout")).isEqualTo("5m");
		assertThat((Integer) get(appConfig(merged), "nbd.server.port")).isEqualTo(10809);
	}

	@Test
	void nbdValuesAndExportOptionsReachTheAppConfig() {
		Rendered r = HelmChart.committed()
			.template("--set", "nbd.port=10900", "--set", "nbd.maxConnections=11", "--set", "nbd.maxInFlight=7", "--set",
					"nbd.maxPayload=1MB", "--set", "nbd.handshakeTimeout=3s", "--set",
					"nbd.allowedAddresses={10.0.0.0/8,192.168.0.0/16}", "--set", "exports.ro.type=memory", "--set",
					"exports.ro.size=2MB", "--set", "exports.ro.readOnly=true", "--set",
					"exports.ro.description=read only scratch", "--set", "exports.rw.type=memory", "--set",
					"exports.rw.size=1MB", "--set", "exports.rw.readOnly=false");
		Map<String, Object> config = appConfig(r);
		assertThat((Integer) get(config, "nbd.server.port")).isEqualTo(10900);
		assertThat((Integer) get(config, "nbd.server.max-connections")).isEqualTo(11);
		assertThat((Integer) get(config, "nbd.server.max-in-flight")).isEqualTo(7);
		assertThat((String) get(config, "nbd.server.max-payload")).isEqualTo("1MB");
		assertThat((String) get(config, "nbd.server.handshake-timeout")).isEqualTo("3s");
		assertThat((String) get(config, "nbd.server.allowed-addresses")).isEqualTo("10.0.0.0/8,192.168.0.0/16");
		assertThat((String) get(config, "nbd.exports.ro.type")).isEqualTo("memory");
		assertThat((String) get(config, "nbd.exports.ro.size")).isEqualTo("2MB");
		assertThat((Boolean) get(config, "nbd.exports.ro.read-only")).isTrue();
		assertThat((String) get(config, "nbd.exports.ro.description")).isEqualTo("read only scratch");
		// false is kept, not dropped as empty: it overrides an application default of true.
		assertThat((Boolean) get(config, "nbd.exports.rw.read-only")).isFalse();
		assertThat((Object) get(config, "nbd.exports.rw.description")).isNull();
		// Without allowedAddresses nothing restricts clients.
		assertThat((Object) get(appConfig(HelmChart.committed().template()), "nbd.server.allowed-addresses")).isNull();
	}

	@Test
	void tlsSecretIsMappedOntoTheSslBundle() {
		Rendered r = HelmChart.committed().template("-f", ci("tls"));
		Map<String, Object> config = appConfig(r);
		assertThat((String) get(config, "nbd.server.ssl.bundle")).isEqualTo("nbd");
		assertThat((String) get(config, "nbd.server.ssl.mode")).isEqualTo("required");
		assertThat((String) get(config, "nbd.server.ssl.client-auth")).isEqualTo("need");
		assertThat((String) get(config, "spring.ssl.bundle.pem.nbd.keystore.certificate"))
			.isEqualTo("file:/etc/nbd-server/tls/tls.crt");
		assertThat((String) get(config, "spring.ssl.bundle.pem.nbd.keystore.private-key"))
			.isEqualTo("file:/etc/nbd-server/tls/tls.key");
		assertThat((String) get(config, "spring.ssl.bundle.pem.nbd.truststore.certificate"))
			.isEqualTo("file:/etc/nbd-server/tls/ca.crt");
		Map<String, Object> sts = r.one("StatefulSet");
		assertThat((String) get(volume(sts, "tls"), "secret.secretName")).isEqualTo("nbd-server-tls");
		assertThat(mount(container(sts), "tls")).containsEntry("mountPath", "/etc/nbd-server/tls")
			.containsEntry("readOnly", true);
		// Without TLS nothing of it is rendered.
		Rendered plain = HelmChart.committed().template();
		assertThat((Object) get(appConfig(plain), "nbd.server.ssl")).isNull();
		assertThat((Object) get(appConfig(plain), "spring.ssl")).isNull();
	}

	@Test
	void policyOfAnExportBackendBeanIsRenderedWithoutStorageKeys() {
		Rendered r = HelmChart.committed()
			.template("--set", "exports.scratch.readOnly=true", "--set", "exports.scratch.description=bean export",
					"--set", "exports.scratch.minimumBlockSize=512B", "--set", "exports.scratch.preferredBlockSize=64KB",
					"--set", "exports.scratch.multiConn=single", "--set",
					"exports.scratch.allowedAddresses={10.0.0.0/8,fd00::/8}", "--set", "exports.disk.eventLoopIo=true");
		Map<String, Object> scratch = get(appConfig(r), "nbd.exports.scratch");
		assertThat(scratch).containsOnly(Map.entry("read-only", true), Map.entry("description", "bean export"),
				Map.entry("minimum-block-size", "512B"), Map.entry("preferred-block-size", "64KB"),
				Map.entry("multi-conn", "single"), Map.entry("allowed-addresses", "10.0.0.0/8,fd00::/8"));
		assertThat((Boolean) get(appConfig(r), "nbd.exports.disk.event-loop-io")).isTrue();
	}

	@Test
	void unixSocketIsSharedWithSidecarsThroughAnEmptyDir() {
		Rendered r = HelmChart.committed().template("-f", ci("unix-socket"));
		Map<String, Object> config = appConfig(r);
		assertThat((String) get(config, "nbd.server.unix-socket")).isEqualTo("/run/nbd/nbd.sock");
		assertThat((String) get(config, "nbd.server.unix-socket-permissions")).isEqualTo("660");
		// TCP stays on.
		assertThat((Integer) get(config, "nbd.server.port")).isEqualTo(10809);
		Map<String, Object> sts = r.one("StatefulSet");
		assertThat(volume(sts, "nbd-socket")).containsKey("emptyDir");
		assertThat(mount(container(sts), "nbd-socket")).containsEntry("mountPath", "/run/nbd");
		List<Map<String, Object>> containers = get(sts, "spec.template.spec.containers");
		assertThat(containers).extracting((c) -> c.get("name")).containsExactly("nbd-server", "backup-agent");
		assertThat(mount(containers.get(1), "nbd-socket")).containsEntry("mountPath", "/run/nbd");
		// Off by default: no socket, no volume.
		Rendered plain = HelmChart.committed().template();
		assertThat((Object) get(appConfig(plain), "nbd.server.unix-socket")).isNull();
		assertThat(((List<Map<String, Object>>) get(plain.one("StatefulSet"), "spec.template.spec.volumes")))
			.extracting((v) -> v.get("name"))
			.doesNotContain("nbd-socket");
	}

	@Test
	void wrongValuesFailAtInstallTime() {
		HelmChart chart = HelmChart.committed();
		assertFails(chart, "schema", "--set", "persistance.size=1Gi");
		assertFails(chart, "schema", "--set", "nbd.port=0");
		assertFails(chart, "schema", "--set", "exports.x.type=disk", "--set", "exports.x.size=1GB");
		assertFails(chart, "path", "--set", "exports.x.type=file", "--set", "exports.x.size=1GB");
		assertFails(chart, "storage keys only apply to exports with a type", "--set", "exports.scratch.size=1GB");
		assertFails(chart, "only apply to type file", "--set", "exports.x.type=memory", "--set", "exports.x.size=1GB",
				"--set", "exports.x.path=x.img");
		assertFails(chart, "schema", "--set", "exports.scratch.multiConn=many");
		assertFails(chart, "schema", "--set", "exports.scratch.minimumBlockSize=huge");
		assertFails(chart, "secretName", "--set", "tls.enabled=true");
		assertFails(chart, "caKey", "--set", "tls.enabled=true", "--set", "tls.secretName=s", "--set",
				"tls.clientAuth=need");
		assertFails(chart, "schema", "--set", "serviceMonitor.interval=often");
	}

	@Test
	void networkPolicyAdmitsOnlyLabelledClientsToTheNbdPort() {
		assertThat(HelmChart.committed().template().ofKind("NetworkPolicy")).isEmpty();
		Rendered r = HelmChart.committed().template("-f", ci("networkpolicy"));
		Map<String, Object> policy = r.one("NetworkPolicy");
		assertThat((Map<String, Object>) get(policy, "spec.podSelector.matchLabels"))
			.isEqualTo(get(r.one("StatefulSet"), "spec.selector.matchLabels"));
		List<Map<String, Object>> ingress = get(policy, "spec.ingress");
		Map<String, Object> nbd = ingress.stream()
			.filter((rule) -> "nbd".equals(get(rule, "ports.0.port")))
			.findFirst()
			.orElseThrow();
		assertThat((Map<String, Object>) get(nbd, "from.0.podSelector.matchLabels"))
			.containsExactly(Map.entry("nbd-client", "true"));
		assertThat((Map<String, Object>) get(nbd, "from.0.namespaceSelector.matchLabels"))
			.containsEntry("nbd-clients", "allowed");
		assertThat((String) get(nbd, "from.1.ipBlock.cidr")).isEqualTo("10.0.0.0/16");
		// Nothing else reaches the NBD port: the other rule is for the management port only.
		assertThat(ingress).extracting((rule) -> get(rule, "ports.0.port")).containsExactlyInAnyOrder("nbd",
				"http-mgmt");
		// The helm test pod is a labelled client, so it passes the policy.
		assertThat((Map<String, Object>) get(r.one("Pod"), "metadata.labels")).containsEntry("nbd-client", "true");
	}

	@Test
	void podDisruptionBudgetKeepsVoluntaryEvictionsToOnePod() {
		Map<String, Object> pdb = HelmChart.committed().template().one("PodDisruptionBudget");
		assertThat((Integer) get(pdb, "spec.maxUnavailable")).isEqualTo(1);
		assertThat(HelmChart.committed().template("--set", "podDisruptionBudget.enabled=false")
			.ofKind("PodDisruptionBudget")).isEmpty();
	}

	@Test
	void monitoringObjectsAppearExactlyWhenEnabled() throws IOException {
		HelmChart chart = HelmChart.withDashboard(this.tmp);
		// Off by default, even where the operator exists.
		assertThat(chart.template(OPERATOR).kinds()).doesNotContain("ServiceMonitor", "PrometheusRule")
			.filteredOn("ConfigMap"::equals)
			.hasSize(1);
		// On, without the operator API: no ServiceMonitor/PrometheusRule (they would fail to apply).
		Rendered noOperator = chart.template("-f", ci("monitoring"));
		assertThat(noOperator.kinds()).doesNotContain("ServiceMonitor", "PrometheusRule");
		assertThat(noOperator.ofKind("ConfigMap")).hasSize(2);
		// On, with the operator.
		Rendered r = chart.template("-f", ci("monitoring"), OPERATOR);
		Map<String, Object> monitor = r.one("ServiceMonitor");
		assertThat((String) get(monitor, "apiVersion")).isEqualTo("monitoring.coreos.com/v1");
		assertThat((String) get(monitor, "metadata.labels.release")).isEqualTo("kube-prometheus-stack");
		assertThat((String) get(monitor, "spec.endpoints.0.port")).isEqualTo("http-mgmt");
		assertThat((String) get(monitor, "spec.endpoints.0.path")).isEqualTo("/actuator/prometheus");
		assertThat((String) get(monitor, "spec.endpoints.0.interval")).isEqualTo("15s");
		// It selects the Service that exposes the management port.
		Map<String, Object> headless = r.named("Service", "rel-nbd-server-headless");
		assertThat((Map<String, Object>) get(headless, "metadata.labels"))
			.containsAllEntriesOf(get(monitor, "spec.selector.matchLabels"));
		assertThat((Map<String, Object>) get(r.named("Service", "rel-nbd-server"), "metadata.labels"))
			.doesNotContainEntry("app.kubernetes.io/component", "headless");
		Map<String, Object> rule = r.one("PrometheusRule");
		assertThat((String) get(rule, "metadata.labels.release")).isEqualTo("kube-prometheus-stack");
		Map<String, Object> dashboard = r.named("ConfigMap", "rel-nbd-server-dashboard");
		assertThat((String) get(dashboard, "metadata.labels.grafana_dashboard")).isEqualTo("1");
		assertThat((String) get(dashboard, "metadata.annotations.grafana_folder")).isEqualTo("Storage");
		assertThat(((Map<String, String>) get(dashboard, "data")).get("nbd-server.json"))
			.isEqualToIgnoringWhitespace(readString(chart.dir().resolve(HelmChart.DASHBOARD)));
		// Each can be switched on alone.
		assertThat(chart.template("--set", "serviceMonitor.enabled=true", OPERATOR).kinds())
			.contains("ServiceMonitor")
			.doesNotContain("PrometheusRule");
		assertThat(chart.template("--set", "prometheusRule.enabled=true", OPERATOR).kinds())
			.contains("PrometheusRule")
			.doesNotContain("ServiceMonitor");
	}

	@Test
	void alertsCoverBlockStorageFailuresAndPassPromtool() throws IOException {
		Path promtool = ExternalTool.require("promtool");
		Rendered r = HelmChart.withDashboard(this.tmp).template("-f", ci("monitoring"), OPERATOR);
		Map<String, Object> spec = get(r.one("PrometheusRule"), "spec");
		Path rules = this.tmp.resolve("rules.yaml");
		Files.writeString(rules, new Yaml().dump(spec));
		Processes.run(Duration.ofSeconds(30), promtool.toString(), "check", "rules", rules.toString())
			.assertSuccess();
		List<Map<String, Object>> alerts = get(spec, "groups.0.rules");
		Map<String, String> exprs = new java.util.LinkedHashMap<>();
		alerts.forEach((a) -> exprs.put((String) a.get("alert"), (String) a.get("expr")));
		assertThat(exprs).containsOnlyKeys("NbdFlushLatencyHigh", "NbdServerDown", "NbdListenerNotReady",
				"NbdRequestErrorRateHigh", "NbdConnectionsNearLimit", "NbdExportSyncFailed");
		assertThat(exprs.get("NbdExportSyncFailed")).contains("nbd_sync_failures_total").contains("> 0");
		assertThat(exprs.get("NbdFlushLatencyHigh")).contains("histogram_quantile(0.99")
			.contains("nbd_flush_seconds_bucket")
			.contains("> 0.5");
		assertThat(exprs.get("NbdServerDown")).contains("up{").contains("== 0");
		assertThat(exprs.get("NbdRequestErrorRateHigh")).contains("nbd_requests_seconds_count")
			.contains("outcome!=\"success\"");
		// Compared with the same max-connections the chart gives the server.
		assertThat(exprs.get("NbdConnectionsNearLimit")).contains("sum by (namespace, pod) (nbd_connections")
			.contains("> 512 * 0.8");
		// Scoped to this release's series.
		assertThat(exprs.values()).allSatisfy((e) -> assertThat(e).contains("namespace=\"storage\""));
		assertThat(alerts).allSatisfy((a) -> assertThat((String) get(a, "labels.team")).isEqualTo("storage"));

		Rendered tuned = HelmChart.committed().template("--set", "prometheusRule.enabled=true", "--set",
				"nbd.maxConnections=100", "--set", "prometheusRule.listenerDown.kubeStateMetrics=false", "--set",
				"prometheusRule.seriesSelector=service=\"nbd\"", OPERATOR);
		Map<String, Object> tunedSpec = get(tuned.one("PrometheusRule"), "spec");
		Files.writeString(rules, new Yaml().dump(tunedSpec));
		Processes.run(Duration.ofSeconds(30), promtool.toString(), "check", "rules", rules.toString())
			.assertSuccess();
		List<Map<String, Object>> tunedAlerts = get(tunedSpec, "groups.0.rules");
		assertThat(tunedAlerts).extracting((a) -> a.get("alert")).doesNotContain("NbdListenerNotReady");
		assertThat(tunedAlerts).extracting((a) -> (String) a.get("expr")).anyMatch((e) -> e.contains("> 100 * 0.8"));
		assertThat(tunedAlerts).extracting((a) -> (String) a.get("expr"))
			.allSatisfy((e) -> assertThat(e).contains("{service=\"nbd\"").doesNotContain("job="));
	}

	@Test
	void testHookChecksTheNbdPortAndReadiness() {
		Rendered r = HelmChart.committed().template();
		Map<String, Object> pod = r.one("Pod");
		assertThat((Map<String, Object>) get(pod, "metadata.annotations")).containsEntry("helm.sh/hook", "test");
		Map<String, Object> container = get(pod, "spec.containers.0");
		assertThat((String) get(container, "image")).startsWith("busybox:");
		assertThat(env(container, "NBD_HOST")).isEqualTo("rel-nbd-server.storage.svc");
		assertThat(env(container, "NBD_PORT")).isEqualTo("10809");
		assertThat(env(container, "READINESS_URL"))
			.isEqualTo("http://rel-nbd-server-0.rel-nbd-server-headless.storage.svc:8081/actuator/health/readiness");
		assertThat((String) get(container, "args.0")).contains("nc ").contains("wget ");
		assertThat((Boolean) get(pod, "spec.securityContext.runAsNonRoot")).isTrue();
		assertThat(HelmChart.committed().template("--set", "tests.enabled=false").ofKind("Pod")).isEmpty();
	}

	@Test
	void notesTellHowToConnect() {
		// helm template does not render NOTES; a client-side install dry run does, without a cluster.
		Processes.Result dryRun = Processes.run(Duration.ofSeconds(60), null, null,
				List.of(ExternalTool.require("helm").toString(), "install", "rel", HelmChart.CHART.toString(),
						"--namespace", "storage", "--dry-run=client"));
		dryRun.assertSuccess();
		assertThat(dryRun.stdout()).contains("nbd-client -N disk rel-nbd-server-0.rel-nbd-server-headless.storage.svc 10809 /dev/nbd0")
			.contains("kubectl port-forward")
			.contains("/actuator/health/readiness")
			.contains("TLS is off");
	}

	private static void assertFails(HelmChart chart, String expected, String... args) {
		Processes.Result result = chart.templateRaw(args);
		assertThat(result.exitCode()).as("helm template %s", List.of(args)).isNotZero();
		assertThat(result.stderr()).containsIgnoringCase(expected);
	}

	private static String ci(String name) {
		return HelmChart.CHART.resolve("ci").resolve(name + "-values.yaml").toString();
	}

	/** The application.yaml the chart renders into its ConfigMap, parsed. */
	static Map<String, Object> appConfig(Rendered rendered) {
		Map<String, Object> configMap = rendered.named("ConfigMap", "rel-nbd-server");
		String yaml = ((Map<String, String>) get(configMap, "data")).get("application.yaml");
		return new Yaml(new SafeConstructor(new LoaderOptions())).load(yaml);
	}

	private static Map<String, Object> container(Map<String, Object> sts) {
		return get(sts, "spec.template.spec.containers.0");
	}

	private static Map<String, Object> mount(Map<String, Object> container, String name) {
		List<Map<String, Object>> mounts = get(container, "volumeMounts");
		return mounts.stream().filter((m) -> name.equals(m.get("name"))).findFirst().orElseThrow();
	}

	private static Map<String, Object> volume(Map<String, Object> sts, String name) {
		List<Map<String, Object>> volumes = get(sts, "spec.template.spec.volumes");
		return volumes.stream().filter((v) -> name.equals(v.get("name"))).findFirst().orElseThrow();
	}

	private static String env(Map<String, Object> container, String name) {
		List<Map<String, Object>> env = get(container, "env");
		return env.stream()
			.filter((e) -> name.equals(e.get("name")))
			.map((e) -> (String) e.get("value"))
			.findFirst()
			.orElseThrow();
	}

	private static String readString(Path path) throws IOException {
		return Files.readString(path);
	}

	private static String[] concat(String[] a, String[] b) {
		return Stream.concat(Stream.of(a), Stream.of(b)).toArray(String[]::new);
	}

}
