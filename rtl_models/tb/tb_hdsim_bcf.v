`timescale 1ns / 1ps
// Simulation wrapper for the cocotb bench (not synthesized): a free-running
// clock (no Python wake-up per cycle), the DUT, and the perturbation source: a
// table of integer IMC perturbations per (query id, iteration, factor,
// codevector) that the bench writes ($readmemh, two's complement PW-bit words)
// and that FixedBCF's perturb hook reads too.  It also counts back-pressure
// stalls in hardware: cycles in which the finished next decode waits in DONE
// because the previous result has not been taken (no Python wake-up per cycle).
module tb_hdsim_bcf #(
    parameter integer B = 4, L = 16, M = 20, F = 2,
    parameter integer WQ = 8, WX = 8, WU = 8, G = 10, P = 4,
    parameter integer MAX_ITER = 10, T_INT = 2, TC_INT = 230, A = 4, DOT = 0,
    parameter [31:0]  SEED = 32'hACE1ACE1,
    parameter integer QW = 16, PERTURB = 1, PW = 10, DIV_STEPS = 2, UJ = 1,
    parameter         CB_FILE = "codebooks.hex",
    parameter integer NQ = 1,                 // query ids covered by the table
    parameter         PERT_FILE = "pert.hex",
    parameter integer IW  = (M > 1) ? $clog2(M) : 1,
    parameter integer ITW = $clog2(MAX_ITER + 1),
    parameter integer FW  = (F > 1) ? $clog2(F) : 1,
    parameter integer AB  = WU + ((DOT != 0) ? ((B > 1) ? $clog2(B) : 1) : 0),
    parameter integer SW  = AB + $clog2(M + 1),
    parameter integer RW  = G + 2
) ();
    reg clk = 1'b0;
    always #5 clk = ~clk;

    reg              rst = 1'b1;
    reg              s_valid = 1'b0;
    reg [L*WQ-1:0]   s_data = {L*WQ{1'b0}};
    reg [QW-1:0]     s_qid = {QW{1'b0}};
    reg              m_ready = 1'b0;
    wire             s_ready, m_valid, m_conv;
    wire [F*IW-1:0]  m_idx;
    wire [ITW-1:0]   m_iters;
    wire [QW-1:0]    m_qid;
    wire             pert_rd;
    wire [QW-1:0]    pert_qid;
    wire [ITW-1:0]   pert_iter;
    wire [FW-1:0]    pert_factor;
    wire [IW-1:0]    pert_m;
    reg  [P*PW-1:0]  pert_data = {P*PW{1'b0}};
    wire             dbg_step, dbg_sampled, dbg_pulled, dbg_conv;
    wire [QW-1:0]    dbg_qid;
    wire [ITW-1:0]   dbg_iter;
    wire [FW-1:0]    dbg_factor;
    wire [AB-1:0]    dbg_amax;
    wire [IW-1:0]    dbg_argmax;
    wire [SW-1:0]    dbg_S;
    wire [RW-1:0]    dbg_R;
    wire [31:0]      dbg_lfsr, dbg_cycle, dbg_start_cycle;
    wire [15:0]      dbg_draws;
    wire [B*L*WU-1:0] dbg_u;
    wire [M*AB-1:0]  dbg_a, dbg_w;
    wire [B*L*WX-1:0] dbg_x;
    wire [3:0]       dbg_state;

    hdsim_bcf #(
        .B(B), .L(L), .M(M), .F(F), .WQ(WQ), .WX(WX), .WU(WU), .G(G), .P(P),
        .MAX_ITER(MAX_ITER), .T_INT(T_INT), .TC_INT(TC_INT), .A(A), .DOT(DOT),
        .SEED(SEED), .QW(QW), .PERTURB(PERTURB), .PW(PW), .DIV_STEPS(DIV_STEPS), .UJ(UJ),
        .DEBUG(1), .CB_FILE(CB_FILE)
    ) u_dut (
        .clk(clk), .rst(rst),
        .s_valid(s_valid), .s_ready(s_ready), .s_data(s_data), .s_qid(s_qid),
        .m_valid(m_valid), .m_ready(m_ready), .m_idx(m_idx), .m_iters(m_iters),
        .m_conv(m_conv), .m_qid(m_qid),
        .pert_rd(pert_rd), .pert_qid(pert_qid), .pert_iter(pert_iter),
        .pert_factor(pert_factor), .pert_m(pert_m), .pert_data(pert_data),
        .dbg_step(dbg_step), .dbg_qid(dbg_qid), .dbg_iter(dbg_iter),
        .dbg_factor(dbg_factor), .dbg_sampled(dbg_sampled), .dbg_pulled(dbg_pulled),
        .dbg_conv(dbg_conv), .dbg_amax(dbg_amax), .dbg_argmax(dbg_argmax),
        .dbg_S(dbg_S), .dbg_R(dbg_R), .dbg_lfsr(dbg_lfsr), .dbg_draws(dbg_draws),
        .dbg_u(dbg_u), .dbg_a(dbg_a), .dbg_w(dbg_w), .dbg_x(dbg_x),
        .dbg_cycle(dbg_cycle), .dbg_start_cycle(dbg_start_cycle), .dbg_state(dbg_state)
    );

    // back-pressure that really stalls the core: DONE (state 10) holds a finished
    // decode while the output register still holds an untaken result
    wire done_blocked = (dbg_state == 4'd10) && m_valid && !m_ready;
    reg [31:0] stall_cycles = 32'd0;
    always @(posedge clk) if (done_blocked) stall_cycles <= stall_cycles + 32'd1;

    // perturbation table: entry ((qid * MAX_ITER + iter - 1) * F + factor) * M + m
    localparam integer PDEPTH = (PERTURB != 0) ? NQ * MAX_ITER * F * M : 1;
    reg [PW-1:0] ptab [0:PDEPTH-1];
    integer pi;
    initial begin
        for (pi = 0; pi < PDEPTH; pi = pi + 1) ptab[pi] = {PW{1'b0}};
        if (PERTURB != 0) $readmemh(PERT_FILE, ptab);
    end
    integer pk, pbase;
    always @(posedge clk) begin
        pbase = ((pert_qid * MAX_ITER + pert_iter - 1) * F + pert_factor) * M;
        for (pk = 0; pk < P; pk = pk + 1) begin
            if (pert_rd && pert_qid < NQ && pert_m + pk < M)
                pert_data[pk*PW +: PW] <= ptab[pbase + pert_m + pk];
            else
                pert_data[pk*PW +: PW] <= {PW{1'b0}};
        end
    end
endmodule
