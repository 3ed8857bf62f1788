/*
 * QC (per sample): MAD-based thresholds (per sample or per pre-QC cluster, qc.mad_scope) with
 * floors scaled to the genes measured, doublets (scrublet), DecontX ambient correction
 * (qc.ambient: layers["decontaminated"], obs["ambient_contamination"]), Hb indicators;
 * removed cells counted by reason (and by pre-QC group) in uns["bonemet"]["qc"].
 */
process QC {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(h5ad, stageAs: 'input/*')
    val  config_yaml   // this stage's slice of config.yaml, as text: -resume compares it by value

    output:
    tuple val(meta), path("${prefix}.qc.h5ad"), emit: h5ad
    path "versions.yml"                       , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def config_b64 = config_yaml.toString().bytes.encodeBase64().toString()  // one safe shell word
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    """
    python3 -c "import base64; open('stage_config.yaml', 'wb').write(base64.b64decode('${config_b64}'))"
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet qc \\
        --input ${h5ad} \\
        --config stage_config.yaml \\
        ${args} \\
        --output ${prefix}.qc.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.qc.h5ad
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
