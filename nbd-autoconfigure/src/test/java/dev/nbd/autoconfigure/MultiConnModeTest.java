package dev.nbd.autoconfigure;

import java.time.Duration;
import java.util.function.Consumer;

import org.junit.jupiter.api.Test;

import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

import dev.nbd.backend.ExportBackend;
import dev.nbd.server.Export;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Libnbd;
import dev.nbd.testsupport.MultiConnProbe;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * {@code nbd.exports.<name>.multi-conn} with a backend that caches per connection and says it
 * is not safe for several connections, checked with real libnbd clients.
 */
class MultiConnModeTest {

	private final ApplicationContextRunner runner = new ApplicationContextRunner()
		.withConfiguration(AutoConfigurations.of(NbdServerAutoConfiguration.class))
		.withUserConfiguration(CachedExportConfiguration.class)
		.withPropertyValues("nbd.server.port=0");

	@Test
	void autoDoesNotAdvertiseMultiConnForAnUnsafeBackend() {
		run("auto", (server) -> {
			assertThat(canMultiConn(server)).isEqualTo(2);
			// The backend really is unsafe: without emulation a flush elsewhere does not help.
			Processes.Result probe = MultiConnProbe.run(uri(server), 3, 0, false);
			assertThat(probe.exitCode()).as(probe.stdout() + probe.stderr()).isNotZero();
			assertThat(probe.stderr()).contains("not visible");
		});
	}

	@Test
	void emulateAdvertisesMultiConnAndMakesItTrue() {
		run("emulate", (server) -> {
			assertThat(canMultiConn(server)).isZero();
			Processes.Result probe = MultiConnProbe.run(uri(server), 4, 0, true).assertSuccess();
			assertThat(probe.stdout()).contains("ok");
			Export export = server.export("cached");
			assertThat(export.flushRequests()).isPositive();
			assertThat(export.backendSyncs()).isPositive().isLessThanOrEqualTo(export.flushRequests());
		});
	}

	@Test
	void singleRefusesASecondConnectionAndDoesNotAdvertiseMultiConn() {
		run("single", (server) -> {
			assertThat(canMultiConn(server)).isEqualTo(2);
			String script = """
					import nbd, sys
					first = nbd.NBD()
					first.connect_uri(sys.argv[1])
					second = nbd.NBD()
					try:
					    second.connect_uri(sys.argv[1])
					    sys.exit("second connection accepted")
					except nbd.Error as e:
					    print("refused:", e)
					first.shutdown()
					# Once the first has gone, the export is free again (the server may need a moment).
					import time
					for attempt in range(50):
					    third = nbd.NBD()
					    try:
					        third.connect_uri(sys.argv[1])
					        break
					    except nbd.Error:
					        time.sleep(0.1)
					else:
					    sys.exit("export not released after the first connection closed")
					third.pwrite(b"x" * 512, 0)
					third.flush()
					third.shutdown()
					print("ok")
					""";
			Processes.Result r = Libnbd.python(Duration.ofSeconds(60), script, uri(server)).assertSuccess();
			// NBD_REP_ERR_POLICY, as libnbd words it.
			assertThat(r.stdout()).contains("refused:").contains("server policy prevents NBD_OPT_GO").contains("ok");
		});
	}

	private void run(String mode, Consumer<NbdServer> test) {
		this.runner.withPropertyValues("nbd.exports.cached.multi-conn=" + mode).run((context) -> {
			assertThat(context).hasNotFailed();
			test.accept(((ConfigurableApplicationContext) context).getBean(NbdServer.class));
		});
	}

	private static int canMultiConn(NbdServer server) {
		ExternalTool.require("nbdinfo");
		return Processes.run(Duration.ofSeconds(30), "nbdinfo", "--can", "multi-conn", uri(server)).exitCode();
	}

	private static String uri(NbdServer server) {
		return "nbd://127.0.0.1:" + server.port() + "/cached";
	}

	@Configuration(proxyBeanMethods = false)
	static class CachedExportConfiguration {

		@Bean
		ExportBackend cached() {
			return new PerConnectionCacheBackend("cached", 8 * 1024 * 1024);
		}

	}

}
