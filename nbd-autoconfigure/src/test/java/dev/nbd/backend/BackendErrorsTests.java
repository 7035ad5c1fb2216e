package dev.nbd.backend;

import java.io.IOException;
import java.io.SyncFailedException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.NonWritableChannelException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.ReadOnlyFileSystemException;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.protocol.NbdError;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatExceptionOfType;

/** The mapping from what the JDK throws to NBD errors, and the file backend's use of it. */
class BackendErrorsTests {

	@TempDir
	Path dir;

	@Test
	void fullDevicesAreEnospc() {
		assertThat(BackendErrors.errorOf(new IOException("No space left on device"))).isEqualTo(NbdError.ENOSPC);
		assertThat(BackendErrors.errorOf(new IOException("Disk quota exceeded"))).isEqualTo(NbdError.ENOSPC);
		assertThat(BackendErrors.errorOf(new IOException("File too large"))).isEqualTo(NbdError.ENOSPC);
		assertThat(BackendErrors.errorOf(new FileSystemException("/d", null, "No space left on device")))
			.isEqualTo(NbdError.ENOSPC);
	}

	@Test
	void refusedWritesAreEperm() {
		assertThat(BackendErrors.errorOf(new FileSystemException("/d", null, "Read-only file system")))
			.isEqualTo(NbdError.EPERM);
		assertThat(BackendErrors.errorOf(new AccessDeniedException("/d"))).isEqualTo(NbdError.EPERM);
		assertThat(BackendErrors.errorOf(new IOException("Permission denied"))).isEqualTo(NbdError.EPERM);
		assertThat(BackendErrors.errorOf(new IOException("Operation not permitted"))).isEqualTo(NbdError.EPERM);
		assertThat(BackendErrors.errorOf(new ReadOnlyFileSystemException())).isEqualTo(NbdError.EPERM);
		assertThat(BackendErrors.errorOf(new NonWritableChannelException())).isEqualTo(NbdError.EPERM);
	}

	@Test
	void allocationFailuresAreEnomem() {
		assertThat(BackendErrors.errorOf(new OutOfMemoryError("Java heap space"))).isEqualTo(NbdError.ENOMEM);
		assertThat(BackendErrors.errorOf(new OutOfMemoryError("Cannot reserve 1048576 bytes of direct buffer memory")))
			.isEqualTo(NbdError.ENOMEM);
		assertThat(BackendErrors.errorOf(new IOException("Cannot allocate memory"))).isEqualTo(NbdError.ENOMEM);
	}

	@Test
	void everythingElseIsEio() {
		assertThat(BackendErrors.errorOf(new IOException("Input/output error"))).isEqualTo(NbdError.EIO);
		assertThat(BackendErrors.errorOf(new SyncFailedException("sync failed"))).isEqualTo(NbdError.EIO);
		assertThat(BackendErrors.errorOf(new ClosedChannelException())).isEqualTo(NbdError.EIO);
		assertThat(BackendErrors.errorOf(new NoSuchFileException("/d"))).isEqualTo(NbdError.EIO);
		assertThat(BackendErrors.errorOf(new NullPointerException())).isEqualTo(NbdError.EIO);
	}

	@Test
	void causesAreFollowedAndChosenErrorsKept() {
		assertThat(BackendErrors.errorOf(new RuntimeException(new IOException("No space left on device"))))
			.isEqualTo(NbdError.ENOSPC);
		assertThat(BackendErrors.errorOf(new NbdBackendException(NbdError.EINVAL, "nope"))).isEqualTo(NbdError.EINVAL);
		NbdBackendException translated = BackendErrors.translate("write at 0 of /d",
				new IOException("Disk quota exceeded"));
		assertThat(translated.error()).isEqualTo(NbdError.ENOSPC);
		assertThat(translated.getMessage()).contains("write at 0 of /d", "Disk quota exceeded");
		assertThat(BackendErrors.translate("x", translated)).isSameAs(translated);
	}

	@Test
	void aCycleOfCausesEnds() {
		IOException a = new IOException("a");
		IOException b = new IOException("b", a);
		a.initCause(b);
		assertThat(BackendErrors.errorOf(a)).isEqualTo(NbdError.EIO);
	}

	@Test
	void theFileBackendNamesTheFileAndTheError() throws Exception {
		Path path = this.dir.resolve("disk.img");
		Files.write(path, new byte[8192]);
		try (FileBackend readOnly = new FileBackend("disk", path, -1, null, true)) {
			// A read-only channel refuses writes: EPERM, not EIO.
			assertThatExceptionOfType(NbdBackendException.class)
				.isThrownBy(() -> readOnly.write(0, ByteBuffer.allocate(1), false))
				.satisfies((ex) -> assertThat(ex.error()).isEqualTo(NbdError.EPERM))
				.withMessageContaining(path.toString());
		}
		FileBackend closed = new FileBackend("disk", path, -1, null, false);
		closed.close();
		assertThatExceptionOfType(NbdBackendException.class).isThrownBy(closed::flush)
			.satisfies((ex) -> assertThat(ex.error()).isEqualTo(NbdError.EIO))
			.withMessageContaining("fdatasync of " + path);
	}

}
