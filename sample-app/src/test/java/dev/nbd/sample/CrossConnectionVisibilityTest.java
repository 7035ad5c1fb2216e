package dev.nbd.sample;

import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import org.springframework.beans.factory.annotation.Autowired;
import org.springframework.boot.test.context.SpringBootTest;
import org.springframework.test.context.DynamicPropertyRegistry;
import org.springframework.test.context.DynamicPropertySource;

import dev.nbd.autoconfigure.LocalNbdServerPort;
import dev.nbd.server.Export;
import dev.nbd.server.NbdServer;
import dev.nbd.testsupport.MultiConnProbe;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * The cross-connection FLUSH/FUA contract with real clients: several libnbd handles on one
 * export of the sample app; write on one, flush on another, read on a third; many aio writers in
 * flight at once; FUA on one visible on the others.
 */
@SpringBootTest(properties = { "nbd.server.port=0", "server.port=0" })
class CrossConnectionVisibilityTest {

	@TempDir
	static Path data;

	@DynamicPropertySource
	static void diskInTempDir(DynamicPropertyRegistry registry) {
		registry.add("nbd.exports.disk.path", () -> data.resolve("disk.img").toString());
	}

	@LocalNbdServerPort
	int port;

	@Autowired
	NbdServer server;

	@ParameterizedTest
	@ValueSource(strings = { "mem", "disk" })
	void flushOnOneConnectionCoversWritesOfTheOthers(String export) {
		Export e = this.server.export(export);
		long flushesBefore = e.flushRequests();
		Processes.Result probe = MultiConnProbe.run("nbd://127.0.0.1:" + this.port + "/" + export, 4, 0, true)
			.assertSuccess();
		assertThat(probe.stdout()).contains("ok");
		// Two FLUSH commands went through the export's shared flush, and so did the FUA write
		// unless the backend does FUA itself (memory and file both do).
		assertThat(e.flushRequests() - flushesBefore).isEqualTo(e.backend().canFua() ? 2 : 3);
		assertThat(e.backendSyncs()).isPositive();
	}

}
