package dev.nbd.server;

import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;
import dev.nbd.backend.filter.Fault;
import dev.nbd.backend.filter.FaultInjectingBackend;
import dev.nbd.backend.filter.Operation;
import dev.nbd.protocol.NbdError;
import dev.nbd.protocol.NbdProtocol;
import dev.nbd.testsupport.NbdServerExtension;
import dev.nbd.testsupport.RawNbdClient;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * A failed sync is remembered: after one FLUSH (or the sync of a FUA write) failed, writes the
 * server acknowledged may be lost, so every later FLUSH and FUA request of that export fails
 * with EIO, on every connection, even though the backend's next sync would succeed (as Linux's
 * fdatasync does after it dropped the dirty pages). Plain reads and writes go on.
 */
@ExtendWith(OutputCaptureExtension.class)
class SyncFailureLatchTests {

	private static final int SIZE = 4 << 20;

	private static final int EIO = NbdError.EIO.code();

	@TempDir
	Path dir;

	@RegisterExtension
	final NbdServerExtension servers = new NbdServerExtension();

	private NbdServer server;

	@Test
	void aFailedFlushOfTheFileExportFailsEveryLaterFlushAndFuaWrite(CapturedOutput output) throws Exception {
		FileBackend file = this.servers
			.closeAfter(new FileBackend("disk", this.dir.resolve("disk.img"), SIZE, null, false));
		Fault once = Fault.failedSync().times(1);
		this.server = this.servers.start(FaultInjectingBackend.builder(file).fault(once).build());
		Export export = this.server.export("disk");
		try (RawNbdClient a = RawNbdClient.connect(this.server.port(), "disk");
				RawNbdClient b = RawNbdClient.connect(this.server.port(), "disk")) {
			assertThat(a.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
			assertThat(a.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
			assertThat(once.fired()).isOne();
			// The backend would sync fine now: the latch, not the backend, fails these.
			assertThat(a.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
			assertThat(b.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
			assertThat(fuaWrite(b, 8192)).isEqualTo(EIO);
			// Not durable, but still a disk: plain writes and reads work.
			assertThat(b.call(NbdProtocol.CMD_WRITE, 8192, 4096, new byte[4096]).error()).isZero();
			assertThat(a.call(NbdProtocol.CMD_READ, 0, 4096, null).error()).isZero();
		}
		try (RawNbdClient c = RawNbdClient.connect(this.server.port(), "disk")) {
			assertThat(c.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
		}
		assertThat(export.syncFailed()).isTrue();
		assertThat(export.syncFailures()).isOne();
		assertThat(output.getOut().split("a sync failed", -1)).hasSize(2);
	}

	@Test
	void aFailedNativeFuaWriteLatchesToo() throws Exception {
		// The memory backend does FUA itself: its failed sync shows as SyncFailedException.
		Fault once = Fault.failedSync().on(Operation.WRITE).times(1);
		this.server = this.servers.start(FaultInjectingBackend.builder(new MemoryBackend("mem", SIZE)).fault(once).build());
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "mem")) {
			assertThat(client.call(NbdProtocol.CMD_WRITE, 0, 4096, new byte[4096]).error()).isZero();
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();
			assertThat(fuaWrite(client, 0)).isEqualTo(EIO);
			assertThat(once.fired()).isOne();
			assertThat(fuaWrite(client, 4096)).isEqualTo(EIO);
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
		}
		assertThat(this.server.export("mem").syncFailed()).isTrue();
	}

	@Test
	void theFirstFailureKeepsItsErrorAndLaterOnesAreEio() throws Exception {
		Fault full = Fault.error(NbdError.ENOSPC).on(Operation.FLUSH).times(1);
		this.server = this.servers.start(FaultInjectingBackend.builder(new MemoryBackend("mem", SIZE)).fault(full).build());
		try (RawNbdClient client = RawNbdClient.connect(this.server.port(), "mem")) {
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(NbdError.ENOSPC.code());
			assertThat(client.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
		}
	}

	/** Backends with per-connection views sync each connection on its own: one failure still latches the export. */
	@Test
	void aFailedSyncOfOneConnectionsViewLatchesTheWholeExport() throws Exception {
		ExportBackend perConnection = new MemoryBackend("views", SIZE) {

			@Override
			public boolean isMultiConnSafe() {
				return false;
			}

		};
		Fault second = Fault.failedSync().after(1).times(1);
		this.server = this.servers.start(FaultInjectingBackend.builder(perConnection).fault(second).build());
		assertThat(this.server.export("views").sharedFlush()).isNull();
		try (RawNbdClient a = RawNbdClient.connect(this.server.port(), "views");
				RawNbdClient b = RawNbdClient.connect(this.server.port(), "views")) {
			assertThat(b.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isZero();
			assertThat(a.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
			assertThat(b.call(NbdProtocol.CMD_FLUSH, 0, 0, null).error()).isEqualTo(EIO);
		}
	}

	private static int fuaWrite(RawNbdClient client, long offset) throws Exception {
		client.sendRequest(NbdProtocol.CMD_FLAG_FUA, NbdProtocol.CMD_WRITE, 99, offset, 4096, new byte[4096]);
		return client.readSimpleReply().error();
	}

}
