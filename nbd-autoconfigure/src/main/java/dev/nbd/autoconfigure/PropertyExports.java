package dev.nbd.autoconfigure;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;

/**
 * The backends made from {@code nbd.exports.*} entries that have a type. Owns them: closes the
 * file backends when the context closes.
 */
public class PropertyExports implements AutoCloseable {

	private final List<ExportBackend> backends = new ArrayList<>();

	public PropertyExports(NbdExportProperties properties) {
		for (Map.Entry<String, NbdExportProperties.Export> entry : properties.getExports().entrySet()) {
			String name = entry.getKey();
			NbdExportProperties.Export export = entry.getValue();
			if (export.getType() == null) {
				continue;
			}
			this.backends.add(create(name, export));
		}
	}

	private static ExportBackend create(String name, NbdExportProperties.Export export) {
		switch (export.getType()) {
			case MEMORY -> {
				if (export.getSize() == null) {
					throw new IllegalStateException("nbd.exports." + name + ".size is required for a memory export");
				}
				return new MemoryBackend(name, export.getSize().toBytes(), export.getDescription(), export.isReadOnly());
			}
			case FILE -> {
				if (export.getPath() == null) {
					throw new IllegalStateException("nbd.exports." + name + ".path is required for a file export");
				}
				long size = (export.getSize() != null) ? export.getSize().toBytes() : -1;
				try {
					return new FileBackend(name, export.getPath(), size, export.getDescription(), export.isReadOnly(),
							export.isEventLoopIo());
				}
				catch (IOException ex) {
					throw new UncheckedIOException("Cannot open nbd.exports." + name + ".path " + export.getPath(), ex);
				}
			}
			default -> throw new IllegalStateException("unknown export type " + export.getType());
		}
	}

	public List<ExportBackend> backends() {
		return this.backends;
	}

	@Override
	public void close() throws Exception {
		for (ExportBackend backend : this.backends) {
			if (backend instanceof AutoCloseable closeable) {
				closeable.close();
			}
		}
	}

}
