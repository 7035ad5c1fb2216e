package dev.nbd.backend.filter;

/** The {@link dev.nbd.backend.ExportBackend} operations a {@link Fault} can apply to. */
public enum Operation {

	/** {@code read}, and {@code lend} (memory lent for a READ). */
	READ,

	/** {@code write}. */
	WRITE,

	/** {@code flush}. */
	FLUSH,

	/** {@code trim}. */
	TRIM,

	/** {@code zero}. */
	ZERO,

	/** {@code cache}. */
	CACHE,

	/** {@code extents} (BLOCK_STATUS, and READs of backends that report holes). */
	EXTENTS

}
